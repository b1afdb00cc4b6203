"""The `headshot` command as a person runs it: exit codes and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import pytest

from headshot.cli import main
from headshot.samples import astronaut_shots


def _headshot(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "headshot", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_prepare_exits_zero_and_prints_each_photo(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, img in list(astronaut_shots().items())[:3]:
        img.save(photos / name)
    (photos / "readme.txt").write_text("hello")
    run = _headshot(
        "prepare",
        str(photos),
        "--out",
        str(tmp_path / "out"),
        "--class",
        "woman",
        "--face-backend",
        "dlib",
        "--tagger",
        "none",
    )
    assert run.returncode == 0, run.stderr
    assert "3 of 4 photos kept" in run.stdout
    assert "not_an_image" in run.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [p["status"] for p in report["photos"]].count("kept") == 3


def test_prepare_exits_nonzero_with_a_reason_when_nothing_is_kept(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.txt").write_text("not a photo")
    run = _headshot("prepare", str(photos), "--out", str(tmp_path / "out"), "--face-backend", "dlib")
    assert run.returncode == 1
    assert "no_photos_kept" in run.stderr and "not_an_image" in run.stderr


def test_missing_input_folder_is_a_clear_error(tmp_path):
    run = _headshot("prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert run.returncode == 1 and "no such folder" in run.stderr


def test_explicit_missing_tagger_names_the_files_needed(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    astronaut_shots()["astronaut.png"].save(photos / "a.png")
    run = _headshot(
        "prepare",
        str(photos),
        "--out",
        str(tmp_path / "out"),
        "--face-backend",
        "dlib",
        "--tagger",
        "wd14",
        "--tagger-models",
        str(tmp_path),
    )
    assert run.returncode == 1
    assert "selected_tags.csv" in run.stderr and "model.onnx" in run.stderr


def test_version_names_the_installed_package(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"headshot {version('headshot-studio')}"
