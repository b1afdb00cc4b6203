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
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from skimage import data as skdata
from skimage.transform import SimilarityTransform, warp

from headshot.errors import BackendUnavailable
from headshot.faces.base import Face, FaceAnalyzer
from headshot.faces.insightface_onnx import (
    ARCFACE_TEMPLATE,
    InsightFaceAnalyzer,
    default_search_dirs,
    find_model_pack,
    similarity_transform,
    warp_affine,
)

# Real det_10g output names, in the order the session lists them.
DET_OUTPUTS = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
# Stub decoder constants, in stride units (the backend multiplies them by the stride).
BOX_DELTAS = [6.0, 7.0, 6.0, 9.0]  # left, top, right, bottom from the anchor centre
KPS_DELTAS = [-3.0, -2.0, 3.0, -2.0, 0.0, 1.0, -2.0, 4.0, 2.0, 4.0]  # 5 (x, y) offsets
# Astronaut (skimage.data.astronaut) eyes, nose, mouth corners, picked by eye.
ASTRONAUT_KPS = np.array([[205, 98], [245, 98], [225, 120], [208, 145], [241, 145]], float)


def _save(graph, path: Path, opset: int = 13) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # readable by older onnxruntime builds too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def make_detector(
    path: Path,
    strides=(8, 16, 32),
    anchors: int = 2,
    batched: bool = False,
    input_name: str = "input.1",
    input_hw=("H", "W"),
) -> Path:
    """SCRFD stand-in whose scores come from the picture: at stride level i the score of a cell is
    the mean of input channel i % 3 over that cell (so a pure red square fires stride 8, green
    stride 16, blue stride 32; levels beyond 3 are zeroed). Box and keypoint deltas are the
    constants above for every anchor. Output names/order/shapes follow the real det_10g."""
    nodes, inits, outputs = [], [], []
    inits += [
        _const("zero", np.float32(0)),
        _const("flat1", np.array([-1, 1], np.int64)),
        _const("box_c", np.array([BOX_DELTAS], np.float32)),
        _const("kps_c", np.array([KPS_DELTAS], np.float32)),
    ]
    if batched:
        inits.append(_const("batch_axis", np.array([0], np.int64)))
    names = DET_OUTPUTS if len(strides) == 3 else [f"out{i}" for i in range(3 * len(strides))]
    fmc = len(strides)
    for i, s in enumerate(strides):
        c = i % 3
        inits += [
            _const(f"st{i}", np.array([c], np.int64)),
            _const(f"en{i}", np.array([c + 1], np.int64)),
            _const(f"ax{i}", np.array([1], np.int64)),
            _const(f"gain{i}", np.float32(1.0 if i < 3 else 0.0)),
        ]
        nodes += [
            helper.make_node("Slice", ["input", f"st{i}", f"en{i}", f"ax{i}"], [f"ch{i}"]),
            helper.make_node("AveragePool", [f"ch{i}"], [f"pool{i}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Mul", [f"pool{i}", f"gain{i}"], [f"g{i}"]),
            helper.make_node("Transpose", [f"g{i}"], [f"t{i}"], perm=[0, 2, 3, 1]),  # [1,h,w,1]
            helper.make_node("Concat", [f"t{i}"] * anchors, [f"a{i}"], axis=3),  # [1,h,w,anchors]
            helper.make_node("Reshape", [f"a{i}", "flat1"], [f"score{i}"]),  # [N,1]
            helper.make_node("Mul", [f"score{i}", "zero"], [f"z{i}"]),
            helper.make_node("Add", [f"z{i}", "box_c"], [f"bbox{i}"]),  # [N,4]
            helper.make_node("Add", [f"z{i}", "kps_c"], [f"kps{i}"]),  # [N,10]
        ]
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for i in range(fmc):
            name = names[len(outputs)]
            if batched:
                nodes.append(helper.make_node("Unsqueeze", [f"{kind}{i}", "batch_axis"], [name]))
                outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, f"n{i}", width]))
            else:
                nodes.append(helper.make_node("Identity", [f"{kind}{i}"], [name]))
                outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{i}", width]))
    nodes.insert(0, helper.make_node("Identity", [input_name], ["input"]))
    graph = helper.make_graph(
        nodes,
        "det_10g_stub",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, *input_hw])],
        outputs,
        inits,
    )
    return _save(graph, path)


def make_recognizer(path: Path, seed: int = 0) -> Path:
    """ArcFace stand-in: 8x8 average pool of the 112x112 crop, then a fixed random 588x512 projection."""
    weights = np.random.default_rng(seed).standard_normal((3 * 14 * 14, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pool"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "w600k_r50_stub",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
        [_const("w", weights)],
    )
    return _save(graph, path)


def make_genderage(path: Path) -> Path:
    """genderage stand-in: female logit = mean red, male logit = mean green, age = 0, all over the 96x96 crop."""
    nodes = [
        helper.make_node("ReduceMean", ["data"], ["mean"], axes=[2, 3], keepdims=0),  # [1,3]
        helper.make_node("Mul", ["mean", "pick"], ["fc1"]),
    ]
    graph = helper.make_graph(
        nodes,
        "genderage_stub",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 96, 96])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3])],
        [_const("pick", np.array([[1, 1, 0]], np.float32))],
    )
    return _save(graph, path)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("buffalo_l")
    make_detector(folder / "det_10g.onnx")
    make_recognizer(folder / "w600k_r50.onnx")
    make_genderage(folder / "genderage.onnx")
    return folder


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


@pytest.mark.parametrize("mirrored", [False, True], ids=["upright", "mirrored"])
def test_alignment_matrix_matches_skimage_similarity_transform(mirrored):
    """Our numpy Umeyama gives insightface's estimate_norm matrix (skimage SimilarityTransform),
    also for mirrored keypoints, where the best fit must stay a rotation, not a reflection."""
    kps = ASTRONAUT_KPS * [-1, 1] + [512, 0] if mirrored else ASTRONAUT_KPS
    ours = similarity_transform(kps, ARCFACE_TEMPLATE)
    if hasattr(SimilarityTransform, "from_estimate"):  # skimage >= 0.26
        ref = SimilarityTransform.from_estimate(kps, ARCFACE_TEMPLATE)
    else:
        ref = SimilarityTransform()
        ref.estimate(kps, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(ours, ref.params[:2], atol=1e-6)
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


# -- model files -----------------------------------------------------------------------------


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
