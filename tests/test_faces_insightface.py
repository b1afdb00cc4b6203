"""The insightface buffalo_l backend, run against small stand-in ONNX graphs.

The real model files cannot be downloaded in CI, so every fixture builds tiny graphs with
onnx.helper that carry the real models' input/output names and shapes:
  det_10g.onnx    input "input.1" [1,3,H,W]  -> 9 outputs score/bbox/kps at strides 8,16,32
  w600k_r50.onnx  input "input.1" [1,3,112,112] -> "683" [1,512]
  genderage.onnx  input "data" [1,3,96,96] -> "fc1" [1,3] (female logit, male logit, age/100)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from insightface_stubs import (  # noqa: F401  (the pack fixture, and builders other modules import from here)
    BOX_DELTAS,
    KPS_DELTAS,
    _const,
    _save,
    make_detector,
    make_genderage,
    make_recognizer,
    pack,
)
from PIL import Image
from skimage import data as skdata
from skimage.transform import SimilarityTransform, warp

from headshot.faces.base import Face, FaceAnalyzer
from headshot.faces.insightface_onnx import ARCFACE_TEMPLATE, InsightFaceAnalyzer, similarity_transform, warp_affine

# Astronaut (skimage.data.astronaut) eyes, nose, mouth corners, picked by eye.
ASTRONAUT_KPS = np.array([[205, 98], [245, 98], [225, 120], [208, 145], [241, 145]], float)


@pytest.fixture(scope="module")
def analyzer(pack) -> InsightFaceAnalyzer:
    return InsightFaceAnalyzer(pack, providers=["CPUExecutionProvider"])


def _pack_with_detector(tmp_path: Path, pack: Path, **detector_args) -> Path:
    folder = tmp_path / "buffalo_l"
    folder.mkdir()
    (folder / "w600k_r50.onnx").write_bytes((pack / "w600k_r50.onnx").read_bytes())
    make_detector(folder / "det_10g.onnx", **detector_args)
    return folder


def _expected(cell_x: int, cell_y: int, stride: int, det_scale: float):
    """Box and keypoints the stub encodes for an anchor, in original-image pixels."""
    cx, cy = cell_x * stride, cell_y * stride
    d = np.array(BOX_DELTAS) * stride
    box = np.array([cx - d[0], cy - d[1], cx + d[2], cy + d[3]]) / det_scale
    kps = (np.array([cx, cy]) + np.array(KPS_DELTAS).reshape(5, 2) * stride) / det_scale
    return box, kps


def _paint(img: np.ndarray, cell_x: int, cell_y: int, stride: int, colour, cells: int = 1):
    """Fill the image region that lands on a det-canvas cell (the image is drawn at det_scale 0.5)."""
    size = stride * 2
    img[cell_y * size : (cell_y + 1) * size, cell_x * size : (cell_x + cells) * size] = colour


# -- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize("batched", [False, True], ids=["unbatched-2d", "batched-3d"])
def test_detect_decodes_box_and_keypoints_back_to_image_pixels(tmp_path, pack, batched):
    """Stub det_10g (real I/O signature; scores = per-cell mean of the red channel at stride 8).
    A red square filling canvas cell (30, 20) of a 1280x960 photo (det_scale 0.5) must come back as
    one face whose box and 5 keypoints are the stub's deltas around that anchor, scaled by 2."""
    folder = _pack_with_detector(tmp_path, pack, batched=batched)
    analyzer = InsightFaceAnalyzer(folder, providers=["CPUExecutionProvider"])
    img = np.zeros((960, 1280, 3), np.uint8)
    _paint(img, 30, 20, 8, (255, 0, 0))
    faces = analyzer.detect(img)
    assert len(faces) == 1
    box, kps = _expected(30, 20, 8, 0.5)
    np.testing.assert_allclose(faces[0].box, box, atol=1e-3)
    np.testing.assert_allclose(faces[0].keypoints, kps, atol=1e-3)
    np.testing.assert_allclose(faces[0].eyes, kps[:2], atol=1e-3)
    assert faces[0].score > 0.5


def test_detect_decodes_the_15_output_single_anchor_layout(tmp_path, pack):
    """Stub SCRFD with 15 outputs (strides 8..128, one anchor per cell, real I/O layout otherwise):
    a blue square on stride-32 cell (5, 3) decodes at that anchor."""
    folder = _pack_with_detector(tmp_path, pack, strides=(8, 16, 32, 64, 128), anchors=1)
    analyzer = InsightFaceAnalyzer(folder, providers=["CPUExecutionProvider"])
    img = np.zeros((960, 1280, 3), np.uint8)
    _paint(img, 5, 3, 32, (0, 0, 255))
    faces = analyzer.detect(img)
    assert len(faces) == 1
    box, kps = _expected(5, 3, 32, 0.5)
    np.testing.assert_allclose(faces[0].box, box, atol=1e-3)
    np.testing.assert_allclose(faces[0].keypoints, kps, atol=1e-3)


def test_detect_reads_input_name_and_fixed_size_from_the_model(tmp_path, pack):
    """Stub det_10g exported at a fixed 640x640 with its input named "data": asking for
    det_size=320 must still feed 640x640 under that name (onnxruntime rejects anything else)
    and decode with the 640 canvas scale."""
    folder = _pack_with_detector(tmp_path, pack, input_name="data", input_hw=(640, 640))
    analyzer = InsightFaceAnalyzer(folder, providers=["CPUExecutionProvider"], det_size=320)
    assert analyzer.det_hw == (640, 640)
    img = np.zeros((960, 1280, 3), np.uint8)
    _paint(img, 12, 40, 8, (255, 0, 0))
    (face,) = analyzer.detect(img)
    np.testing.assert_allclose(face.box, _expected(12, 40, 8, 0.5)[0], atol=1e-3)


def test_detect_scores_under_threshold_give_no_face(analyzer):
    """Stub det_10g: a dim red square scores (150-127.5)/128 = 0.18 on its cell, under the 0.5 threshold."""
    img = np.zeros((960, 1280, 3), np.uint8)
    _paint(img, 30, 20, 8, (150, 0, 0))
    assert analyzer.detect(img) == []
    _paint(img, 30, 20, 8, (255, 0, 0))  # same place at full strength: found, so the threshold is what cut it
    assert len(analyzer.detect(img)) == 1


def test_detect_nms_merges_overlapping_anchors_but_keeps_separate_faces(analyzer):
    """Stub det_10g: a red patch two cells wide fires 4 anchors (2 cells x 2 anchors) whose boxes
    overlap heavily -> one face; a second patch far away stays a second face."""
    img = np.zeros((960, 1280, 3), np.uint8)
    _paint(img, 30, 20, 8, (255, 0, 0), cells=2)
    assert len(analyzer.detect(img)) == 1
    _paint(img, 60, 50, 8, (255, 0, 0))
    assert len(analyzer.detect(img)) == 2


def test_detect_returns_largest_face_first(analyzer):
    """Stub det_10g: a red cell at stride 8 (high score, small box) and a dimmer green cell at
    stride 16 (lower score, box twice the size). The larger face must come first."""
    img = np.zeros((960, 1280, 3), np.uint8)
    _paint(img, 10, 10, 8, (255, 0, 0))
    _paint(img, 25, 20, 16, (0, 220, 0))
    faces = analyzer.detect(img)
    assert len(faces) == 2
    assert faces[0].score < faces[1].score
    assert faces[0].width == pytest.approx(2 * faces[1].width)


# -- identity --------------------------------------------------------------------------------


def skimage_similarity(src: np.ndarray, dst: np.ndarray) -> SimilarityTransform:
    """skimage's least-squares similarity from `src` to `dst`, in the API of the installed release."""
    if hasattr(SimilarityTransform, "from_estimate"):  # skimage >= 0.26 (estimate() is deprecated there)
        return SimilarityTransform.from_estimate(src, dst)
    transform = SimilarityTransform()  # skimage < 0.26 (the newest for Python 3.10, A1111's)
    transform.estimate(src, dst)
    return transform


@pytest.mark.parametrize("mirrored", [False, True], ids=["upright", "mirrored"])
def test_alignment_matrix_matches_skimage_similarity_transform(mirrored):
    """Our numpy Umeyama gives insightface's estimate_norm matrix (skimage SimilarityTransform),
    also for mirrored keypoints, where the best fit must stay a rotation, not a reflection."""
    kps = ASTRONAUT_KPS * [-1, 1] + [512, 0] if mirrored else ASTRONAUT_KPS
    ours = similarity_transform(kps, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(ours, skimage_similarity(kps, ARCFACE_TEMPLATE).params[:2], atol=1e-6)
    assert np.linalg.det(ours[:, :2]) > 0


def test_warp_samples_like_cv2_warp_affine():
    """PIL warp with cv2's pixel-centre convention equals skimage's warp (same convention as cv2)."""
    img = skdata.astronaut()
    matrix = similarity_transform(ASTRONAUT_KPS, ARCFACE_TEMPLATE)
    ours = warp_affine(img, matrix, 112).astype(float)
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    ref = warp(img, inverse, output_shape=(112, 112), order=1, preserve_range=True)
    assert np.abs(ours - ref).mean() < 1.0


def test_embedding_is_unit_norm_512d_and_follows_the_face(analyzer):
    """Stub w600k_r50 (input.1 [1,3,112,112] -> [1,512], pooled random projection).
    The astronaut scaled by 0.7 and moved gives nearly the same embedding once its keypoints are
    moved too; feeding stale keypoints (no alignment) or another photo gives a far larger distance."""
    img = skdata.astronaut()
    face = Face(box=(170, 50, 280, 180), score=1.0, eyes=ASTRONAUT_KPS[:2], keypoints=ASTRONAUT_KPS)
    emb = analyzer.embed(img, face)
    assert emb.shape == (512,) and emb.dtype == np.float32
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)

    small = np.asarray(Image.fromarray(img).resize((358, 358), Image.BILINEAR))
    moved = np.full((600, 700, 3), 90, np.uint8)
    moved[150:508, 250:608] = small
    moved_kps = ASTRONAUT_KPS * (358 / 512) + [250, 150]
    moved_face = Face(box=(0, 0, 1, 1), score=1.0, eyes=moved_kps[:2], keypoints=moved_kps)
    same = analyzer.distance(emb, analyzer.embed(moved, moved_face))
    stale = analyzer.distance(emb, analyzer.embed(moved, face))
    other = analyzer.distance(emb, analyzer.embed(skdata.coffee()[:, 50:562], face))
    assert same < 0.02
    assert stale > 0.3 and other > 0.3


def test_same_person_distance_is_cosine_0_4_similarity(analyzer):
    """The analyzer satisfies FaceAnalyzer and its distance is cosine distance (orthogonal -> 1)."""
    assert isinstance(analyzer, FaceAnalyzer)
    assert analyzer.same_person_distance == pytest.approx(0.6)
    assert analyzer.distance(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(1.0)


# -- gender ----------------------------------------------------------------------------------


def test_estimate_class_reads_the_crop_around_the_box(analyzer):
    """Stub genderage (data [1,3,96,96] -> fc1 [1,3]; female logit = mean red, male = mean green of
    the crop). A box on the red half is "woman", one on the green half "man": the crop is centred
    on the box and fed as RGB."""
    img = np.zeros((400, 800, 3), np.uint8)
    img[:, :400] = (200, 40, 0)
    img[:, 400:] = (40, 200, 0)
    left = Face(box=(150, 150, 250, 250), score=1.0, eyes=np.zeros((2, 2)))
    right = Face(box=(550, 150, 650, 250), score=1.0, eyes=np.zeros((2, 2)))
    assert analyzer.estimate_class(img, left) == "woman"
    assert analyzer.estimate_class(img, right) == "man"


def test_estimate_class_crop_spans_one_and_a_half_box_widths(analyzer):
    """Stub genderage as above. An 80px green square inside a 100px box on red: the 150px crop
    insightface takes is mostly red ("woman"); a crop of just the box would be mostly green."""
    img = np.zeros((400, 400, 3), np.uint8)
    img[:] = (200, 40, 0)
    img[160:240, 160:240] = (40, 200, 0)
    face = Face(box=(150, 150, 250, 250), score=1.0, eyes=np.zeros((2, 2)))
    assert analyzer.estimate_class(img, face) == "woman"


def test_estimate_class_is_none_without_genderage(tmp_path, pack):
    """Stub pack with only det_10g + w600k_r50: no gender model, so no guess."""
    folder = _pack_with_detector(tmp_path, pack)
    analyzer = InsightFaceAnalyzer(folder, providers=["CPUExecutionProvider"])
    face = Face(box=(10, 10, 50, 50), score=1.0, eyes=np.zeros((2, 2)))
    assert analyzer.estimate_class(np.zeros((64, 64, 3), np.uint8), face) is None


def test_cpu_only_opens_the_sessions_on_the_cpu_where_onnxruntime_offers_cuda(pack, monkeypatch):
    """Training asks for its analyzer with cpu_only: a CUDA session would keep its arena on the card through every
    training step. onnxruntime-gpu is stood in for by its provider list (there is no GPU here)."""
    import onnxruntime

    from headshot.faces import load_face_analyzer

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert load_face_analyzer("insightface", [pack]).providers[0] == "CUDAExecutionProvider"  # elsewhere: the GPU
    kept_off = load_face_analyzer("insightface", [pack], cpu_only=True)
    assert kept_off.providers == ["CPUExecutionProvider"]
    assert all(session.get_providers() == ["CPUExecutionProvider"] for session in (kept_off._det, kept_off._rec))
