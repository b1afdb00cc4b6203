"""`headshot evaluate` with buffalo_l present adds `arcface_similarity`: the cosine of each picture's ArcFace
embedding with the reference photos', averaged. insightface's model files cannot be downloaded here, so the pack
is ONNX stand-ins in the real file layout (buffalo_l/det_10g.onnx, buffalo_l/w600k_r50.onnx, with the real models'
input/output names and shapes, from test_faces_insightface). The value is checked against an independent
computation: skimage's similarity transform onto ArcFace's template, onnxruntime run here, numpy's cosine.
Stand-in weights: this proves the wiring and the arithmetic, not likeness."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_faces_insightface import make_detector, make_recognizer, skimage_similarity

from headshot.cli import main
from headshot.faces.insightface_onnx import ARCFACE_TEMPLATE, InsightFaceAnalyzer
from headshot.faces.subject import pick_subject
from headshot.samples import astronaut_shots

ort = pytest.importorskip("onnxruntime")
skimage_transform = pytest.importorskip("skimage.transform")

REFERENCES = ("astronaut.png", "astronaut_closeup.jpg")
PICTURES = ("astronaut_mirrored.jpg", "astronaut_wide.jpg")


def _embedding(rgb: np.ndarray, detector: InsightFaceAnalyzer, recognizer) -> np.ndarray:
    """The face's embedding computed apart from our code: detection is the stand-in's, the rest is done here."""
    face, _ = pick_subject(detector.detect(rgb))
    assert face is not None, "the stand-in detector finds a face in every test photo"
    # crop pixel -> photo pixel
    tform = skimage_similarity(ARCFACE_TEMPLATE, np.asarray(face.keypoints, float))
    crop = skimage_transform.warp(rgb, tform, output_shape=(112, 112), order=1, preserve_range=True)
    blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    return recognizer.run(None, {"input.1": blob})[0].reshape(-1)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_arcface_similarity_is_the_mean_cosine_to_the_reference_photos(tmp_path, capsys):
    models = tmp_path / "models"
    pack = models / "buffalo_l"
    pack.mkdir(parents=True)
    make_detector(pack / "det_10g.onnx")
    make_recognizer(pack / "w600k_r50.onnx", seed=3)
    shots = astronaut_shots()
    reference, pictures = tmp_path / "reference", tmp_path / "pictures"
    for folder, names in ((reference, REFERENCES), (pictures, PICTURES)):
        folder.mkdir()
        for name in names:
            shots[name].convert("RGB").save(folder / f"{name.split('.')[0]}.png")

    args = ["evaluate", pictures, "--reference", reference, "--face-backend", "insightface"]
    assert main([str(a) for a in [*args, "--face-models", models, "--out", tmp_path / "out"]]) == 0
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    measured = {entry["image"]: entry["arcface_similarity"] for entry in report["images"]}

    detector = InsightFaceAnalyzer(pack, providers=["CPUExecutionProvider"])
    recognizer = ort.InferenceSession(str(pack / "w600k_r50.onnx"), providers=["CPUExecutionProvider"])
    refs = [_embedding(np.asarray(shots[n].convert("RGB")), detector, recognizer) for n in REFERENCES]
    expected = {}
    for name in PICTURES:
        emb = _embedding(np.asarray(shots[name].convert("RGB")), detector, recognizer)
        expected[name.split(".")[0]] = float(np.mean([_cosine(emb, r) for r in refs]))

    assert len(measured) == len(PICTURES)
    for image, value in measured.items():
        key = next(k for k in expected if k in image)
        # skimage's warp samples a little apart from ours (the two embeddings agree to a cosine of 0.998 or more)
        assert value == pytest.approx(expected[key], abs=0.02), (image, value, expected)
    values = list(expected.values())
    assert abs(values[0] - values[1]) > 0.1 and all(v < 0.9 for v in values)  # the pictures differ: not a constant
    mean = report["summary"]["arcface_similarity_mean"]
    assert mean == pytest.approx(np.mean(list(measured.values())), abs=1e-4)
