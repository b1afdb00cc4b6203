"""The face-backend registry: a backend is one opener and one entry in FACE_BACKENDS.

The backend registered here is a real (if blind) analyzer: it finds no face. Nothing of the
registry's own code is replaced.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import headshot.faces as faces
from headshot.errors import BackendUnavailable, HeadshotError
from headshot.faces import FACE_BACKENDS, face_backend_choices, load_face_analyzer
from headshot.faces.dlib_backend import DlibFaceAnalyzer


class BlindAnalyzer:
    """A backend that sees no face (what a new backend module would define)."""

    name = "blind"
    same_person_distance = 0.5

    def detect(self, rgb):
        return []

    def embed(self, rgb, face):
        return np.zeros(4, np.float32)

    def distance(self, a, b):
        return 0.0

    def estimate_class(self, rgb, face):
        return None


def blind_backend(calls, files_found=True):
    def open_analyzer(model_dirs, required, cpu_only=False):
        calls.append((model_dirs, required))
        if files_found:
            return BlindAnalyzer()
        if required:
            raise BackendUnavailable("the blind backend's files are missing: put them in <models>/blind")
        return None

    return open_analyzer


def test_a_registered_backend_is_offered_and_loaded_then_gone_when_removed(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(FACE_BACKENDS, "blind", blind_backend(calls))
    assert face_backend_choices() == ("auto", "insightface", "dlib", "blind")
    analyzer = load_face_analyzer("blind", [str(tmp_path)])
    assert isinstance(analyzer, BlindAnalyzer) and calls == [([tmp_path], True)]
    monkeypatch.delitem(FACE_BACKENDS, "blind")
    assert "blind" not in face_backend_choices()
    with pytest.raises(HeadshotError, match="unknown face backend 'blind'; choose one of auto, insightface, dlib"):
        load_face_analyzer("blind")


def test_auto_takes_the_first_backend_in_order_that_finds_its_files(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.insightface
    calls = []
    monkeypatch.setattr(faces, "FACE_BACKENDS", {"blind": blind_backend(calls), **FACE_BACKENDS})
    assert isinstance(load_face_analyzer("auto", [tmp_path]), BlindAnalyzer)
    assert calls == [([tmp_path], False)]  # under auto a backend may say "not here"

    calls.clear()
    monkeypatch.setattr(faces, "FACE_BACKENDS", {"blind": blind_backend(calls, files_found=False), **FACE_BACKENDS})
    assert isinstance(load_face_analyzer("auto", [tmp_path]), DlibFaceAnalyzer)  # its files missing: the next one
    with pytest.raises(BackendUnavailable, match="blind backend's files are missing"):
        load_face_analyzer("blind", [tmp_path])  # asked for by name: its own message


def test_auto_with_no_backend_available_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(faces, "FACE_BACKENDS", {"blind": blind_backend([], files_found=False)})
    with pytest.raises(BackendUnavailable, match=r"no face backend found its model files \(tried blind\)"):
        load_face_analyzer("auto", [tmp_path])


def test_the_cli_offers_every_registered_backend(monkeypatch):
    from headshot.cli import build_parser

    monkeypatch.setitem(FACE_BACKENDS, "blind", blind_backend([]))
    args = build_parser().parse_args(["prepare", "photos", "--out", "out", "--face-backend", "blind"])
    assert args.face_backend == "blind"


def _two_people(astronaut_img, second_share: float) -> np.ndarray:
    """The astronaut (face ~91 px) beside a smaller copy of herself: a rival when second_share >= 0.6."""
    small = astronaut_img.resize((round(512 * second_share),) * 2)
    canvas = Image.new("RGB", (512 + small.width, 512), "grey")
    canvas.paste(astronaut_img, (0, 0))
    canvas.paste(small, (512, 0))
    return np.asarray(canvas)


@pytest.mark.parametrize("second_share", [0.75, 0.45])
def test_dlib_finds_a_rival_face_narrower_than_its_window_as_the_upsampled_search_does(astronaut_img, second_share):
    """Screening searches first without upsampling (4x cheaper); a second face of 68 px (under dlib's 80 px window)
    beside a 91 px face must still be found, since it rivals it; a 41 px one may be left out (no rival)."""
    from headshot.faces.subject import pick_subject

    analyzer = DlibFaceAnalyzer()
    rgb = _two_people(astronaut_img, second_share)
    upsampled = analyzer.detect(rgb)  # the plain upsampled search, the behaviour to keep
    _, rivals_then = pick_subject(upsampled)
    found = analyzer.detect_screening(rgb)
    subject, rivals = pick_subject(found)
    assert rivals == rivals_then == (1 if second_share >= 0.6 else 0)
    assert subject is not None and abs(subject.center[0] - pick_subject(upsampled)[0].center[0]) < 8


@pytest.mark.parametrize("backend", ["dlib", "insightface"])
def test_each_backend_names_the_model_files_its_cached_embeddings_are_keyed_by(backend, tmp_path):
    if backend == "dlib":
        analyzer = DlibFaceAnalyzer()
    else:
        from test_faces_insightface import make_detector, make_recognizer

        from headshot.faces.insightface_onnx import DETECTOR_FILE, RECOGNIZER_FILE, InsightFaceAnalyzer

        make_detector(tmp_path / DETECTOR_FILE)
        make_recognizer(tmp_path / RECOGNIZER_FILE)
        analyzer = InsightFaceAnalyzer(tmp_path, providers=["CPUExecutionProvider"])
    assert len(analyzer.model_files) == 2 and all(path.is_file() for path in analyzer.model_files)
