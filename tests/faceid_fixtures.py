"""Tiny IP-Adapter FaceID files in the real key layout, and a one-face stand-in detector (a helper module).

The adapters have the layout of tencent-ailab/IP-Adapter's ip-adapter-faceid_sd15.bin (MLPProjModel)
and ip-adapter-faceid-plusv2_sd15.bin (ProjPlusModel with its FacePerceiverResampler), sized for the
tiny test UNets: `image_proj.*`, then per attention processor i (in `unet.attn_processors` order)
`ip_adapter.{i}.to_k_ip/to_v_ip.weight` (cross-attention only) and the FaceID LoRA
`ip_adapter.{i}.to_{q,k,v,out}_lora.{down,up}.weight`. Random weights: they prove wiring, not likeness.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file
from test_faces_insightface import _const, _save, make_recognizer

DET_OUTPUTS = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]


def faceid_state(unet, *, plus: bool = False, clip_width: int = 32, rank: int = 4, seed: int = 0) -> dict:
    """Flat {"image_proj.…", "ip_adapter.…": tensor} for `unet`, as the official files hold them."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    cross = unet.config.cross_attention_dim
    proj = {
        "proj.0.weight": rnd(1024, 512),
        "proj.0.bias": rnd(1024),
        "proj.2.weight": rnd(cross * 4, 1024),
        "proj.2.bias": rnd(cross * 4),
        "norm.weight": 1 + rnd(cross),
        "norm.bias": rnd(cross),
    }
    if plus:  # ProjPlusModel: dim = cross, heads = cross // 64 of width 64, ff_mult 4, depth 4
        inner = (cross // 64) * 64
        pr = "perceiver_resampler."
        proj |= {
            pr + "proj_in.weight": rnd(cross, clip_width),
            pr + "proj_in.bias": rnd(cross),
            pr + "proj_out.weight": rnd(cross, cross),
            pr + "proj_out.bias": rnd(cross),
            pr + "norm_out.weight": 1 + rnd(cross),
            pr + "norm_out.bias": rnd(cross),
        }
        for d in range(4):
            layer = f"{pr}layers.{d}."
            proj |= {
                layer + "0.norm1.weight": 1 + rnd(cross),
                layer + "0.norm1.bias": rnd(cross),
                layer + "0.norm2.weight": 1 + rnd(cross),
                layer + "0.norm2.bias": rnd(cross),
                layer + "0.to_q.weight": rnd(inner, cross),
                layer + "0.to_kv.weight": rnd(2 * inner, cross),
                layer + "0.to_out.weight": rnd(cross, inner),
                layer + "1.0.weight": 1 + rnd(cross),
                layer + "1.0.bias": rnd(cross),
                layer + "1.1.weight": rnd(cross * 4, cross),
                layer + "1.3.weight": rnd(cross, cross * 4),
            }
    ip = {}
    for i, name in enumerate(unet.attn_processors):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        hidden, k_in = attn.to_q.in_features, attn.to_k.in_features
        if not name.endswith("attn1.processor"):
            ip[f"{i}.to_k_ip.weight"] = rnd(hidden, cross)
            ip[f"{i}.to_v_ip.weight"] = rnd(hidden, cross)
        for part, width_in in (
            ("to_q_lora", hidden),
            ("to_k_lora", k_in),
            ("to_v_lora", k_in),
            ("to_out_lora", hidden),
        ):
            ip[f"{i}.{part}.down.weight"] = rnd(rank, width_in)
            ip[f"{i}.{part}.up.weight"] = rnd(hidden, rank)
    return {**{f"image_proj.{k}": v for k, v in proj.items()}, **{f"ip_adapter.{k}": v for k, v in ip.items()}}


def save_adapter(state: dict, path: Path) -> Path:
    """.safetensors as flat keys; .bin as the official nested {"image_proj": …, "ip_adapter": …} torch file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        nested: dict = {"image_proj": {}, "ip_adapter": {}}
        for key, value in state.items():
            part, _, rest = key.partition(".")
            nested[part][rest] = value
        torch.save(nested, str(path))
    return path


def make_tiny_image_encoder(folder: Path, width: int = 32) -> Path:
    """A CLIP vision model folder (config.json + model.safetensors) at toy width, 32 px input."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    with torch.random.fork_rng():
        torch.manual_seed(11)
        CLIPVisionModelWithProjection(config).save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_fixed_face_detector(path: Path, faces: list[tuple[float, float, float]]) -> Path:
    """SCRFD stand-in (det_10g's 9 outputs, fixed 640x640 input) reporting the given faces whatever the
    photo: each (x, y, width) in canvas pixels becomes one stride-8 anchor with score 0.9, a box of
    width x 1.25 width around (x, y) and the 5 keypoints where a frontal face has them. No faces: an
    all-zero score map (nothing detected)."""
    per_level = [(8, 80), (16, 40), (32, 20)]
    nodes, inits, outputs = [helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0)], [], []
    inits.append(_const("zero", np.float32(0)))
    nodes.append(helper.make_node("Mul", ["m", "zero"], ["z"]))  # ties every output to the input
    arrays = {}
    for level, (stride, cells) in enumerate(per_level):
        n = cells * cells * 2
        score, box, kps = np.zeros((n, 1), np.float32), np.zeros((n, 4), np.float32), np.zeros((n, 10), np.float32)
        if level == 0:
            for x, y, w in faces:
                cell = int(round(y / stride)) * cells + int(round(x / stride))
                cx, cy = (cell % cells) * stride, (cell // cells) * stride
                h = 1.25 * w
                score[2 * cell] = 0.9
                box[2 * cell] = np.array([cx - x + w / 2, cy - y + h / 2, x + w / 2 - cx, y + h / 2 - cy]) / stride
                points = [(-0.2, -0.15), (0.2, -0.15), (0, 0.05), (-0.15, 0.25), (0.15, 0.25)]
                kps[2 * cell] = np.array([[x - cx + px * w, y - cy + py * w] for px, py in points]).ravel() / stride
        arrays[level] = (score, box, kps)
    for kind_index, width in enumerate((1, 4, 10)):
        for level in range(3):
            name = DET_OUTPUTS[kind_index * 3 + level]
            inits.append(_const(f"c{name}", arrays[level][kind_index]))
            nodes.append(helper.make_node("Add", [f"c{name}", "z"], [name]))
            outputs.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [arrays[level][kind_index].shape[0], width])
            )
    graph = helper.make_graph(
        nodes,
        "det_10g_fixed_faces",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])],
        outputs,
        inits,
    )
    return _save(graph, path)


def make_buffalo_pack(folder: Path, faces: list[tuple[float, float, float]], seed: int = 0) -> Path:
    """A buffalo_l folder of stand-ins: the fixed-face detector and test_faces_insightface's ArcFace stand-in."""
    folder.mkdir(parents=True, exist_ok=True)
    make_fixed_face_detector(folder / "det_10g.onnx", faces)
    make_recognizer(folder / "w600k_r50.onnx", seed)
    return folder
