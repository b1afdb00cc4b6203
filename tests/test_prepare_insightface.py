"""The insightface path through backend selection and prepare, on stand-in ONNX graphs.

The real buffalo_l files cannot be downloaded in CI; the graphs built by test_faces_insightface
carry the real models' input/output names and shapes (see that module's docstring). They prove
the wiring: auto-selection, detection feeding framing, embeddings feeding the identity check,
and genderage choosing the class word. They say nothing about detection quality.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_faces_insightface import make_detector, make_genderage, make_recognizer

from headshot.dataset.prepare import prepare_dataset
from headshot.dataset.prepare_settings import PrepareSettings
from headshot.errors import BackendUnavailable
from headshot.faces import load_face_analyzer
from headshot.faces.dlib_backend import DlibFaceAnalyzer
from headshot.faces.insightface_onnx import InsightFaceAnalyzer


@pytest.fixture(scope="module")
def insightface_root(tmp_path_factory):
    """A host models/insightface folder in the layout ComfyUI and insightface use."""
    root = tmp_path_factory.mktemp("insightface")
    pack = root / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    make_detector(pack / "det_10g.onnx")
    make_recognizer(pack / "w600k_r50.onnx")
    make_genderage(pack / "genderage.onnx")
    return root


def test_auto_prefers_insightface_when_its_files_are_present(insightface_root):
    assert isinstance(load_face_analyzer("auto", [insightface_root]), InsightFaceAnalyzer)


def test_auto_falls_back_to_dlib_without_insightface_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.insightface either
    assert isinstance(load_face_analyzer("auto", [tmp_path]), DlibFaceAnalyzer)


def test_explicit_insightface_without_files_says_which_files_go_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(BackendUnavailable) as caught:
        load_face_analyzer("insightface", [tmp_path / "models" / "insightface"])
    message = str(caught.value)
    assert "det_10g.onnx" in message and "w600k_r50.onnx" in message and "buffalo_l" in message
    assert str(tmp_path / "models" / "insightface") in message


def _photo_with_stub_face(cell_x: int, cell_y: int, seed: int) -> Image.Image:
    """A 1280x960 photo whose textured red patch the stub detector fires on (stride-8 cell at
    det_scale 0.5); the texture keeps the face sharp enough for screening."""
    rng = np.random.default_rng(seed)
    img = (rng.random((960, 1280, 3)) * 90).astype(np.uint8)
    y, x = cell_y * 16, cell_x * 16
    patch = rng.integers(0, 120, (16, 16, 3), dtype=np.uint8)
    patch[..., 0] = 255
    img[y : y + 16, x : x + 16] = patch
    return Image.fromarray(img)


def test_prepare_runs_on_the_insightface_backend_and_detects_the_class(insightface_root, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (cx, cy) in enumerate([(30, 20), (40, 25), (20, 30)]):
        _photo_with_stub_face(cx, cy, i).save(photos / f"selfie{i}.png")
    settings = PrepareSettings(face_backend="auto", face_model_dirs=[insightface_root], tagger="none")
    result = prepare_dataset(photos, tmp_path / "out", settings)
    assert [p.status for p in result.photos] == ["kept"] * 3, [p.message for p in result.photos]
    assert result.class_word == "woman"  # stub genderage: mean red beats mean green
    assert all(p.caption == "ohwx woman" for p in result.kept)
    assert all("identity_distance" in p.details for p in result.kept)
