"""The insightface buffalo_l model files: finding the pack and saying what is wrong with it.

A folder missing the detector or the recognizer names the folder, the missing files and the fix; a corrupt
file is named; find_model_pack looks in models/buffalo_l (the ComfyUI / ~/.insightface layout) and
default_search_dirs is insightface's home. The model files are the small stand-in graphs of
tests/insightface_stubs.py or empty placeholders.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from insightface_stubs import make_detector, pack  # noqa: F401  (pack: a fixture)

from headshot.errors import BackendUnavailable
from headshot.faces.insightface_onnx import InsightFaceAnalyzer, default_search_dirs, find_model_pack


def test_missing_files_name_the_folder_and_the_files(tmp_path, pack):
    """Folder with only the stub genderage.onnx: both required files are named, with the fix."""
    (tmp_path / "genderage.onnx").write_bytes((pack / "genderage.onnx").read_bytes())
    with pytest.raises(BackendUnavailable) as err:
        InsightFaceAnalyzer(tmp_path)
    problem, _, fix = str(err.value).partition("Download")
    assert "missing" in problem and str(tmp_path) in problem
    assert "det_10g.onnx" in problem and "w600k_r50.onnx" in problem and "genderage" not in problem
    assert "the buffalo_l pack (det_10g.onnx, w600k_r50.onnx, genderage.onnx)" in fix
    assert f"put the files in {tmp_path}" in fix
    assert err.value.code == "backend_unavailable"


def test_missing_recognizer_alone_is_named(tmp_path):
    """Folder with only the stub det_10g.onnx: the message names w600k_r50.onnx, not the detector."""
    make_detector(tmp_path / "det_10g.onnx")
    with pytest.raises(BackendUnavailable) as err:
        InsightFaceAnalyzer(tmp_path)
    problem = str(err.value).partition("Download")[0]
    assert "w600k_r50.onnx" in problem and "det_10g.onnx" not in problem


def test_corrupt_model_file_is_named(tmp_path, pack):
    """Stub det_10g plus a text file saved as w600k_r50.onnx: the error names that file."""
    make_detector(tmp_path / "det_10g.onnx")
    (tmp_path / "w600k_r50.onnx").write_text("this is not a model\n")
    with pytest.raises(BackendUnavailable) as err:
        InsightFaceAnalyzer(tmp_path, providers=["CPUExecutionProvider"])
    assert str(tmp_path / "w600k_r50.onnx") in str(err.value)
    assert "not a valid ONNX model" in str(err.value)


def test_find_model_pack_looks_in_models_buffalo_l(tmp_path):
    """Empty placeholder files in D/models/buffalo_l (ComfyUI / ~/.insightface layout) are found;
    a folder missing the recognizer is not."""
    target = tmp_path / "insightface" / "models" / "buffalo_l"
    target.mkdir(parents=True)
    (target / "det_10g.onnx").touch()
    assert find_model_pack([tmp_path / "elsewhere", tmp_path / "insightface"]) is None
    (target / "w600k_r50.onnx").touch()
    assert find_model_pack([tmp_path / "elsewhere", tmp_path / "insightface"]) == target
    assert find_model_pack([target]) == target


def test_default_search_dirs_are_insightface_home():
    home = Path.home() / ".insightface"
    assert default_search_dirs() == [home / "models", home]
