"""Small stand-in ONNX graphs for the insightface buffalo_l backend (a helper module).

The real model files cannot be downloaded in CI, so these builders make tiny graphs with onnx.helper that
carry the real models' input/output names and shapes (det_10g.onnx, w600k_r50.onnx, genderage.onnx; see
test_faces_insightface.py), and `pack` is a buffalo_l folder holding all three.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

# Real det_10g output names, in the order the session lists them.
DET_OUTPUTS = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
# Stub decoder constants, in stride units (the backend multiplies them by the stride).
BOX_DELTAS = [6.0, 7.0, 6.0, 9.0]  # left, top, right, bottom from the anchor centre
KPS_DELTAS = [-3.0, -2.0, 3.0, -2.0, 0.0, 1.0, -2.0, 4.0, 2.0, 4.0]  # 5 (x, y) offsets


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
