"""Apply Identity Adapter (one photo): IP-Adapter FaceID on the graph's MODEL through ComfyUI's own patcher.

The reference photo is screened as prepare screens a training photo (the core's identity_from_photo:
no face, several faces, too small, blurry are refused with prepare's reasons), its ArcFace identity
taken with our insightface backend, and, for FaceID Plus, the aligned face read by the graph's
CLIP_VISION. The MODEL comes back cloned with an attn2 replace patch on every cross-attention layer
(text attention plus the weighted attention over the identity tokens) and the file's own FaceID LoRA
as weight patches: nothing is loaded a second time, and every node that samples with this MODEL (the
Face Detailer included) draws with the adapter.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

from . import host
from .common import CATEGORY, face_analyzer
from .images import image_batch_to_pils, pil_to_image_batch

FOLDER = "ipadapter"  # ComfyUI_IPAdapter_plus's folder: models/ipadapter
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # an image of this colour is CLIP's all-zero input
_LDM_ATTENTION = re.compile(
    r"^(input_blocks\.(\d+)\.\d+|middle_block\.\d+|output_blocks\.(\d+)\.\d+)\.transformer_blocks\.(\d+)\.attn2$"
)


class IdentityAttention:
    """attn2 replacement for one cross-attention layer: ComfyUI's attention over the text, plus `weight`
    times attention over the identity tokens (precomputed keys and values: [no identity, identity])."""

    def __init__(self, keys, values, weight: float, sigma_start: float = math.inf, sigma_end: float = 0.0):
        self.keys, self.values, self.weight = keys, values, weight
        self.sigma_start, self.sigma_end = sigma_start, sigma_end  # the noise levels it draws at

    def __call__(self, q, k, v, extra_options):
        import torch

        attention = host.module("comfy.ldm.modules.attention").optimized_attention
        heads = extra_options["n_heads"]
        out = attention(q, k, v, heads)
        sigmas = extra_options.get("sigmas")  # the step's noise level, set by ComfyUI's sampler
        if sigmas is not None and not self.sigma_end <= float(sigmas.max()) <= self.sigma_start:
            return out
        order = extra_options.get("cond_or_uncond") or [0]  # ComfyUI's batch chunks: 0 cond, 1 uncond
        rows = torch.tensor([1 if c == 0 else 0 for c in order], device=q.device)
        rows = rows.repeat_interleave(q.shape[0] // len(order))
        ip_k = self.keys.to(q.device, q.dtype)[rows]
        ip_v = self.values.to(q.device, q.dtype)[rows]
        return out + self.weight * attention(q, ip_k, ip_v, heads)

    def to(self, device_or_dtype):
        """ModelPatcher moves patches with the model; a dtype is applied at call time instead."""
        import torch

        if not isinstance(device_or_dtype, (torch.device, str)):
            return self
        keys, values = self.keys.to(device_or_dtype), self.values.to(device_or_dtype)
        return IdentityAttention(keys, values, self.weight, self.sigma_start, self.sigma_end)


def unet_layout(model):
    """The UNet's attention layers (diffusers names, in the file's order) and where ComfyUI patches each
    cross-attention one: {diffusers layer: (block name, block number, transformer index)}."""
    from headshot.errors import HeadshotError
    from headshot.sampling.faceid_tokens import UnetLayout, attention_order

    unet_config = model.model.model_config.unet_config
    to_ldm = host.module("comfy.utils").unet_to_diffusers(unet_config)  # diffusers key -> LDM key
    layers, blocks = [], {}
    for key, ldm in to_ldm.items():
        if key.endswith(".to_q.weight") and ".attn" in key:
            layer = key.removesuffix(".to_q.weight")
            layers.append(layer)
            found = _LDM_ATTENTION.match(ldm.removesuffix(".to_q.weight"))
            if layer.endswith("attn2") and found:
                # ComfyUI numbers the middle block 0 (openaimodel: transformer_options["block"])
                if found[2] is not None:
                    blocks[layer] = ("input", int(found[2]), int(found[4]))
                elif found[3] is not None:
                    blocks[layer] = ("output", int(found[3]), int(found[4]))
                else:
                    blocks[layer] = ("middle", 0, int(found[4]))
    if not layers:
        raise HeadshotError(
            "this MODEL is not a UNet with cross-attention (SD1.x, SD2, SDXL): FaceID cannot be applied to it",
            "adapter_mismatch",
        )
    return UnetLayout(attention_order(layers), int(unet_config.get("context_dim") or 0)), blocks


def clip_face_states(clip_vision, face):
    """[2, patches, width]: CLIP vision's penultimate states of the blank input, then of the aligned face."""
    import torch
    from PIL import Image

    blank = Image.new("RGB", face.size, tuple(round(c * 255) for c in CLIP_MEAN))
    batch = pil_to_image_batch([blank, face.convert("RGB")])
    batch[0] = torch.tensor(CLIP_MEAN)  # exactly the mean: CLIP's normalisation makes it all zeros
    return clip_vision.encode_image(batch).penultimate_hidden_states.float()


def apply_identity_adapter(
    model, photo, adapter_path: Path, weight: float, clip_vision=None, start_at: float = 0.0, end_at: float = 1.0
):
    """(patched MODEL clone, report): the core's FaceID pieces on ComfyUI's ModelPatcher. The identity
    tokens take part from `start_at` to `end_at` of the sampling (shares of the schedule, as KSampler
    Advanced counts); the file's LoRA is a weight patch and works throughout."""
    from headshot.errors import HeadshotError
    from headshot.sampling.faceid_tokens import cross_attention_kv, identity_tokens, lora_in_kohya_names
    from headshot.sampling.identity_adapter import adapter_kind, check_fits, read_adapter_file
    from headshot.sampling.identity_reference import identity_from_photo

    name = adapter_path.name
    if not 0.0 <= start_at < end_at <= 1.0:
        raise HeadshotError(
            f"start_at {start_at:g} and end_at {end_at:g}: need 0 <= start_at < end_at <= 1 "
            "(shares of the sampling steps; 0 and 1 for all of them)",
            "bad_option",
        )
    state = read_adapter_file(adapter_path)
    kind = adapter_kind(state, name)
    if kind == "faceid_plus" and clip_vision is None:
        raise HeadshotError(
            f"{name} is FaceID Plus: it also reads the face with CLIP vision. Connect a Load CLIP Vision node "
            "with CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors (models/clip_vision) to clip_vision, or use "
            "ip-adapter-faceid_sd15.bin",
            "adapter_missing",
        )
    scratch = host.temp_dir()
    scratch.mkdir(parents=True, exist_ok=True)  # ComfyUI makes it at start-up only (main.py)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:  # the core screens a file, as prepare does
        path = Path(folder) / "reference photo.png"
        image_batch_to_pils(photo)[0].save(path)
        identity = identity_from_photo(path, face_analyzer("insightface"), adapter_path, weight=weight)
    layout, blocks = unet_layout(model)
    lora_layers = check_fits(state, layout, name)
    clip = clip_face_states(clip_vision, identity.face) if kind == "faceid_plus" else None
    shortcut = kind == "faceid_plus" and "v2" in adapter_path.stem.lower()  # v2 is told apart by name only
    tokens = identity_tokens(state["image_proj"], identity.embedding, clip, shortcut)
    lora_strength = min(weight, 1.0)  # as the core's sampler: the LoRA follows the weight, capped at 1
    if lora_layers and lora_strength > 0:
        patched = _with_lora(model, lora_in_kohya_names(state["ip_adapter"], lora_layers), lora_strength, name)
    else:
        patched = model.clone()
    sigma_start, sigma_end = math.inf, 0.0
    if (start_at, end_at) != (0.0, 1.0):
        sampling = model.get_model_object("model_sampling")
        sigma_start, sigma_end = sampling.percent_to_sigma(start_at), sampling.percent_to_sigma(end_at)
    for layer, (keys, values) in cross_attention_kv(state["ip_adapter"], layout, tokens).items():
        if layer not in blocks:
            raise HeadshotError(f"{name}: ComfyUI has no attention block for {layer}", "adapter_mismatch")
        attention = IdentityAttention(keys, values, weight, sigma_start, sigma_end)
        patched.set_model_attn2_replace(attention, *blocks[layer])
    report = (
        f"{name} ({'FaceID Plus v2' if shortcut else 'FaceID Plus' if kind == 'faceid_plus' else 'FaceID'}), "
        f"weight {weight:g}: {len(blocks)} cross-attention layers patched, {tokens.shape[1]} identity tokens"
        + (f" from {start_at:g} to {end_at:g} of the steps" if (start_at, end_at) != (0.0, 1.0) else "")
        + ", "
        + (f"its LoRA on {len(lora_layers)} layers at {lora_strength:g}" if lora_layers else "no LoRA in it")
    )
    return patched, report


def _with_lora(model, lora_sd: dict, strength: float, name: str):
    """The FaceID LoRA through ComfyUI's own LoRA loader (weight patches on a clone); a key ComfyUI cannot
    place is an error here rather than a log line."""
    from headshot.errors import HeadshotError

    comfy_lora, comfy_sd = host.module("comfy.lora"), host.module("comfy.sd")
    key_map = comfy_lora.model_lora_keys_unet(model.model, {})
    stems = {k.rsplit(".lora_", 1)[0] for k in lora_sd if ".lora_" in k}
    unplaced = sorted(s for s in stems if s not in key_map)
    if unplaced:
        raise HeadshotError(
            f"{name}: ComfyUI cannot place {len(unplaced)} of its LoRA layers (e.g. {unplaced[0]})", "adapter_mismatch"
        )
    patched, _ = comfy_sd.load_lora_for_models(model, None, lora_sd, strength, 0)
    return patched


class HeadshotApplyIdentityAdapter:
    DESCRIPTION = (
        "One-photo mode: draws the person in the reference photo with IP-Adapter FaceID (or FaceID Plus "
        "v2), no training. Patches the MODEL's cross-attention and adds the file's FaceID LoRA; connect the "
        "output MODEL to KSampler and to the Face Detailer so both draw the same face. The photo must "
        "show one clear face (checked as Prepare Dataset checks photos). Needs the insightface buffalo_l "
        "files in models/insightface/models/buffalo_l."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The checkpoint's MODEL (SD1.5 or SDXL, matching the adapter file)."}),
                "photo": ("IMAGE", {"tooltip": "One photo of the person, one face in it (the first picture is used)."}),
                "adapter_name": (
                    host.file_list(FOLDER),
                    {
                        "tooltip": "An IP-Adapter FaceID file in models/ipadapter: ip-adapter-faceid_sd15.bin, "
                        "ip-adapter-faceid-plusv2_sd15.bin (needs clip_vision) or their _sdxl versions."
                    },
                ),
                "weight": (
                    "FLOAT",
                    {
                        "default": 0.8,
                        "min": 0.0,
                        "max": 2.0,
                        "step": 0.05,
                        "tooltip": "How strongly the face is drawn in (0.6-1.0 is usual); the file's "
                        "LoRA follows it, capped at 1.",
                    },
                ),
            },
            "optional": {
                "start_at": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Share of the sampling steps before the face is drawn in: above 0 lets the "
                        "prompt settle the composition first.",
                    },
                ),
                "end_at": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Share of the sampling steps after which the identity tokens stop (the "
                        "file's LoRA works throughout).",
                    },
                ),
                "clip_vision": (
                    "CLIP_VISION",
                    {
                        "tooltip": "For FaceID Plus: Load CLIP Vision with CLIP-ViT-H-14-laion2B-s32B-b79K "
                        "(the image encoder FaceID Plus was trained with)."
                    },
                ),
            },
        }

    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "report")
    OUTPUT_TOOLTIPS = (
        "The MODEL drawing the person: for KSampler and the Face Detailer.",
        "What was applied (file, kind, layers patched).",
    )
    FUNCTION = "apply"
    CATEGORY = f"{CATEGORY}/generate"

    def apply(self, model, photo, adapter_name: str, weight: float, clip_vision=None, start_at=0.0, end_at=1.0):
        path = host.full_path(FOLDER, adapter_name)
        return apply_identity_adapter(model, photo, path, weight, clip_vision, start_at, end_at)
