"""Apply Identity Adapter (one photo) in ComfyUI: the core's FaceID pieces, the node's attention patch, and
the shipped workflow run by a real ComfyUI.

Without ComfyUI: the attention-layer order and the identity tokens are checked against diffusers (the
library FaceID's layout comes from) and a hand computation; the attn2 patch is run with a STAND-IN for
comfy.ldm.modules.attention.optimized_attention (plain scaled dot-product attention with ComfyUI's
[batch, tokens, heads x width] signature); a reference photo prepare would reject is refused by the node.
With COMFYUI_PATH (and COMFYUI_PYTHON, its interpreter): workflows/one_photo.json runs through ComfyUI's
own prompt executor on a full-size SD1.5 checkpoint with random weights, a random FaceID Plus v2 file in
the real key layout, a random CLIP ViT-L vision model and insightface stand-in ONNX graphs. Random
weights: these prove wiring (the adapter and the reference face reach KSampler's picture and the Face
Detailer's repaint), never likeness.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import tiny_models  # noqa: E402
from faceid_fixtures import faceid_state, make_buffalo_pack, save_adapter  # noqa: E402

from headshot.errors import HeadshotError  # noqa: E402
from headshot.faces.insightface_onnx import InsightFaceAnalyzer  # noqa: E402
from headshot.samples import GROUP_MEMBERS, astronaut, insightface_image  # noqa: E402
from headshot.sampling.faceid_tokens import (  # noqa: E402
    UnetLayout,
    attention_order,
    cross_attention_kv,
    identity_tokens,
    lora_in_kohya_names,
)
from headshot.sampling.identity_adapter import check_fits, read_adapter_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from comfy_nodes import common, identity_adapter  # noqa: E402
from comfy_nodes.images import pil_to_image_batch  # noqa: E402

FACE_AT = (281, 150, 140)  # where the stand-in detector reports the face, in its 640 px canvas


def _reference_photos(folder: Path) -> dict[str, Path]:
    """Two real people with the face where the stand-in detector reports one (as test_identity_adapter)."""
    folder.mkdir(parents=True, exist_ok=True)
    astronaut().save(folder / "astronaut.png")
    x0, y0, x1, y1 = GROUP_MEMBERS["stranger_left.jpg"]
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    insightface_image("t1.jpg").crop((cx - 225, cy - 120, cx + 287, cy + 392)).save(folder / "woman.png")
    return {"astronaut": folder / "astronaut.png", "woman": folder / "woman.png"}


@pytest.fixture(scope="module")
def unets():
    from diffusers import UNet2DConditionModel

    def build(family):
        with torch.device("meta"):  # layout only: names and shapes
            return UNet2DConditionModel(**tiny_models.PUBLISHED[family]["unet"])

    return {"sd1": build("sd1"), "sdxl": build("sdxl")}


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_attention_order_is_diffusers_attn_processors_order(unets, family):
    names = [n.removesuffix(".processor") for n in unets[family].attn_processors]
    assert attention_order(sorted(names, reverse=True)) == names


def test_identity_tokens_are_the_files_projection_of_the_embedding(unets):
    """FaceID's MLPProjModel by hand: LayerNorm(reshape(W2 gelu(W1 x + b1) + b2)); no identity = zero input."""
    proj = {k.removeprefix("image_proj."): v for k, v in faceid_state(unets["sd1"]).items() if k.startswith("image_")}
    embedding = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    tokens = identity_tokens(proj, embedding)
    assert tokens.shape == (2, 4, 768)

    def by_hand(x):
        h = torch.nn.functional.gelu(x @ proj["proj.0.weight"].T + proj["proj.0.bias"])
        h = (h @ proj["proj.2.weight"].T + proj["proj.2.bias"]).reshape(4, 768)
        return torch.nn.functional.layer_norm(h, (768,), proj["norm.weight"], proj["norm.bias"])

    assert torch.allclose(tokens[1], by_hand(torch.from_numpy(embedding)), atol=1e-5)
    assert torch.allclose(tokens[0], by_hand(torch.zeros(512)), atol=1e-5)


def test_faceid_plus_needs_clip_states_of_the_width_it_was_trained_on(unets):
    proj = {
        k.removeprefix("image_proj."): v
        for k, v in faceid_state(unets["sd1"], plus=True, clip_width=64).items()
        if k.startswith("image_")
    }
    with pytest.raises(HeadshotError, match="CLIP vision"):
        identity_tokens(proj, np.ones(512, np.float32))
    with pytest.raises(HeadshotError, match="1280"):
        identity_tokens(proj, np.ones(512, np.float32), torch.zeros(2, 5, 32))
    plain = identity_tokens(proj, np.ones(512, np.float32), torch.randn(2, 5, 64, generator=torch.Generator()))
    assert plain.shape == (2, 4, 768)


def test_every_key_of_the_file_has_its_place_in_a_host_layout(unets, tmp_path):
    """The layout a host gives (names in order, text width) passes the core's fit check; every to_k/v_ip
    key becomes one cross-attention layer's keys and values, every LoRA pair one kohya-named module."""
    unet = unets["sd1"]
    state = faceid_state(unet)
    path = save_adapter(state, tmp_path / "ip-adapter-faceid_sd15.bin")
    read = read_adapter_file(path)
    layout = UnetLayout(attention_order(n.removesuffix(".processor") for n in unet.attn_processors), 768)
    lora_layers = check_fits(read, layout, path.name)
    tokens = torch.randn(2, 4, 768)
    kv = cross_attention_kv(read["ip_adapter"], layout, tokens)
    assert len(kv) == 16 and 2 * len(kv) == sum(1 for k in read["ip_adapter"] if "_ip." in k)
    first = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    assert torch.allclose(kv[first][0], tokens @ read["ip_adapter"]["1.to_k_ip.weight"].T)
    kohya = lora_in_kohya_names(read["ip_adapter"], lora_layers)
    assert len(kohya) * 2 == 3 * sum(1 for k in read["ip_adapter"] if "_lora." in k)  # down, up (+ alpha)
    modules = {"lora_unet_" + n.replace(".", "_") for n, _ in unet.named_modules()}
    assert {k.rsplit(".", 2)[0] if k.endswith("alpha") else k.split(".lora_")[0] for k in kohya} <= modules


def _attention(q, k, v, heads, **_):
    """STAND-IN for comfy.ldm.modules.attention.optimized_attention: [B, N, heads*d] in and out."""
    b, _, inner = q.shape

    def split(x):
        return x.reshape(b, -1, heads, inner // heads).transpose(1, 2)

    out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, -1, inner)


@pytest.fixture
def attention_inputs(monkeypatch):
    """(keys, values, q, k, v) at random, with the stand-in attention in place of ComfyUI's."""
    import types

    standin = types.ModuleType("comfy.ldm.modules.attention")
    standin.optimized_attention = _attention
    monkeypatch.setitem(sys.modules, "comfy.ldm.modules.attention", standin)
    g = torch.Generator().manual_seed(0)
    keys, values = torch.randn(2, 4, 16, generator=g), torch.randn(2, 4, 16, generator=g)
    return (keys, values, *(torch.randn(4, 9, 16, generator=g) for _ in range(3)))


def test_the_attention_patch_adds_the_identity_to_each_batch_chunk_by_its_role(attention_inputs):
    keys, values, q, k, v = attention_inputs
    options = {"n_heads": 2, "cond_or_uncond": [1, 0]}  # ComfyUI's batch: uncond half, then cond half
    text = _attention(q, k, v, 2)
    assert torch.equal(identity_adapter.IdentityAttention(keys, values, 0.0)(q, k, v, options), text)
    out = identity_adapter.IdentityAttention(keys, values, 0.7)(q, k, v, options)
    for rows, ours in ((slice(0, 2), 0), (slice(2, 4), 1)):  # uncond rows see no identity, cond rows the face
        ip = _attention(q[rows], keys[ours].expand(2, -1, -1), values[ours].expand(2, -1, -1), 2)
        assert torch.allclose(out[rows], text[rows] + 0.7 * ip, atol=1e-6)
    moved = identity_adapter.IdentityAttention(keys, values, 0.7).to(torch.float16)  # a dtype: cast per call
    assert moved.keys.dtype == torch.float32


def test_the_identity_is_drawn_only_at_noise_levels_between_start_and_end(attention_inputs):
    keys, values, q, k, v = attention_inputs
    text = _attention(q, k, v, 2)
    window = identity_adapter.IdentityAttention(keys, values, 0.7, sigma_start=5.0, sigma_end=1.0).to("cpu")
    for sigma, inside in ((14.6, False), (5.0, True), (2.0, True), (1.0, True), (0.3, False)):
        options = {"n_heads": 2, "cond_or_uncond": [0], "sigmas": torch.full((4,), sigma)}
        out = window(q, k, v, options)
        assert torch.equal(out, text) != inside, sigma


def test_start_and_end_outside_the_schedule_are_refused_before_anything_loads(tmp_path):
    adapter = tmp_path / "ip-adapter-faceid_sd15.bin"  # never read: the shares are checked first
    for start, end in ((0.5, 0.5), (0.8, 0.2), (-0.1, 1.0), (0.0, 1.5)):
        with pytest.raises(HeadshotError, match="start_at") as caught:
            identity_adapter.apply_identity_adapter(object(), None, adapter, 0.8, None, start, end)
        assert caught.value.code == "bad_option"


@pytest.mark.parametrize(
    "faces, code", [([], "no_face"), ([FACE_AT, (520, 160, 130)], "multiple_faces")], ids=["no-face", "two-faces"]
)
def test_the_node_refuses_a_photo_prepare_would_reject_with_its_reason(tmp_path, monkeypatch, unets, faces, code):
    analyzer = InsightFaceAnalyzer(make_buffalo_pack(tmp_path / "pack", faces))
    monkeypatch.setitem(common._analyzers, "insightface", analyzer)  # our backend on stand-in ONNX graphs
    adapter = save_adapter(faceid_state(unets["sd1"]), tmp_path / "ip-adapter-faceid_sd15.bin")
    photo = pil_to_image_batch([astronaut()])
    with pytest.raises(HeadshotError) as caught:  # refused before the MODEL is looked at
        identity_adapter.apply_identity_adapter(object(), photo, adapter, 0.8)
    assert caught.value.code == code and "reference photo refused" in str(caught.value)


def test_faceid_plus_without_clip_vision_says_what_to_connect(tmp_path, unets):
    adapter = save_adapter(faceid_state(unets["sd1"], plus=True), tmp_path / "ip-adapter-faceid-plusv2_sd15.bin")
    with pytest.raises(HeadshotError, match="Load CLIP Vision"):
        identity_adapter.apply_identity_adapter(object(), pil_to_image_batch([astronaut()]), adapter, 0.8)


# ---------------------------------------------------------------------------------------------
# the shipped workflow in a real ComfyUI

HOST_RUN = Path(__file__).with_name("comfy_one_photo_run.py")


@pytest.mark.skipif(
    not os.environ.get("COMFYUI_PATH"),
    reason="set COMFYUI_PATH (and COMFYUI_PYTHON, its interpreter) to run workflows/one_photo.json in a real ComfyUI",
)
def test_one_photo_workflow_runs_in_comfyui_and_the_face_reaches_both_samplers(tmp_path, unets):
    from test_workflows import all_specs, to_api

    base = tmp_path / "comfy"
    models = base / "models"
    photos = _reference_photos(base / "input")
    make_buffalo_pack(models / "insightface" / "models" / "buffalo_l", [FACE_AT])
    state = faceid_state(unets["sd1"], plus=True, clip_width=1024)  # ViT-L's width, the encoder below
    save_adapter(state, models / "ipadapter" / "ip-adapter-faceid-plusv2_sd15.bin")
    _random_clip_vision_vit_l(models / "clip_vision" / "random_vit_l.safetensors")
    checkpoint = models / "checkpoints" / "random_sd15.safetensors"
    given = os.environ.get("HEADSHOT_SD15_CHECKPOINT")  # a prebuilt one saves ~30 s
    checkpoint.parent.mkdir(parents=True)
    if given:
        checkpoint.symlink_to(Path(given).resolve())
    else:
        tool = ROOT / "tools" / "make_random_sd15_checkpoint.py"
        subprocess.run([sys.executable, str(tool), str(checkpoint)], check=True, timeout=600)

    workflow = json.loads((ROOT / "workflows" / "one_photo.json").read_text())
    prompt = to_api(workflow, all_specs())
    prompt["1"]["inputs"]["ckpt_name"] = checkpoint.name
    prompt["3"]["inputs"]["clip_name"] = "random_vit_l.safetensors"
    prompt["5"]["inputs"].update(width=256, height=256)
    prompt["8"]["inputs"]["batch_size"] = 1
    prompt["9"]["inputs"].update(steps=2, cfg=5.0)  # instead of the style's 20 steps: CPU time
    prompt["11"]["inputs"].update(steps=2, guide_size=256)
    prompt["90"] = {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "raw"}}
    prompt["91"] = {"class_type": "PreviewAny", "inputs": {"source": ["11", 1]}}

    def variant(photo, weight, sampler_model=("4", 0)):
        p = json.loads(json.dumps(prompt))
        p["2"]["inputs"]["image"] = photos[photo].name
        p["4"]["inputs"]["weight"] = weight
        p["9"]["inputs"]["model"] = list(sampler_model)
        return p

    runs = {
        "off": variant("astronaut", 0.0),
        "astronaut": variant("astronaut", 0.8),
        "woman": variant("woman", 0.8),
        # KSampler without the adapter, the detailer with it: only the repaint can tell the faces apart
        "detailer_astronaut": variant("astronaut", 0.8, ("1", 0)),
        "detailer_woman": variant("woman", 0.8, ("1", 0)),
        "late": variant("astronaut", 0.8),
    }
    runs["late"]["4"]["inputs"]["start_at"] = 0.5  # the identity tokens sit out the first of the two steps
    job = {"pack": str(ROOT), "base": str(base), "prompts": runs}
    run = subprocess.run(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), str(HOST_RUN)],
        cwd=os.environ["COMFYUI_PATH"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, run.stdout[-3000:] + run.stderr[-6000:]
    result = json.loads(line[len("RESULT ") :])
    assert f"IMPORT FAILED: {ROOT}" not in run.stdout + run.stderr  # ComfyUI's audio nodes fail without torchaudio

    def image(name, node):
        from PIL import Image

        files = result[name]["images"][node]
        assert len(files) == 1, result[name]
        return np.asarray(Image.open(base / "output" / files[0]), np.int16)

    raw = {name: image(name, "90") for name in runs}
    final = {name: image(name, "13") for name in runs}
    print({name: result[name]["texts"] for name in runs})
    assert (
        "FaceID Plus v2" in result["astronaut"]["texts"]["16"]
        and "16 cross-attention" in result["astronaut"]["texts"]["16"]
    )
    assert "1 repainted" in result["astronaut"]["texts"]["91"]
    change = {
        "adapter": np.abs(raw["astronaut"] - raw["off"]).mean(),
        "face": np.abs(raw["astronaut"] - raw["woman"]).mean(),
        "detailer face": np.abs(final["detailer_astronaut"] - final["detailer_woman"]).mean(),
        "start_at": np.abs(raw["late"] - raw["astronaut"]).mean(),
    }
    print("mean change of 255:", change)
    assert change["adapter"] > 1.0 and change["face"] > 1.0  # adapter and reference face reach KSampler
    assert np.array_equal(raw["detailer_astronaut"], raw["detailer_woman"])  # the plain MODEL drew both ...
    assert change["detailer face"] > 0.5  # ... and the detailer's repaint carries the reference face
    assert "from 0.5 to 1 of the steps" in result["late"]["texts"]["16"]
    assert change["start_at"] > 0.5  # ComfyUI's sampler passes the step's sigma: the window takes effect


def _random_clip_vision_vit_l(path: Path) -> Path:
    """CLIP ViT-L/14 vision tower with projection (transformers names, ComfyUI detects it by its 24 layers), random."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    with torch.random.fork_rng():
        torch.manual_seed(5)
        model = CLIPVisionModelWithProjection(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
