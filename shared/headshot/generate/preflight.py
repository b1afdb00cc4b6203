"""Checks on generate's options that must fail before any model loads: seeds, sizes, LoRA files, families.

A LoRA's family is read from its keys and kohya metadata, the base model's from its checkpoint
header or diffusers config: nothing is loaded, so a wrong pairing costs a second, not a minute
of loading followed by a traceback listing every module that did not match.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..errors import HeadshotError
from ..options import bad_option, check_lora_files, check_positive, check_seeds
from ..outputs import safe_name

MIN_SIDE, MAX_SIDE = 64, 4096  # a 4096 x 4096 picture is 256 MB of latents per step on SDXL: already huge
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


def parse_size(text: str | None, option: str = "--size") -> tuple[int, int] | None:
    """"512x640" -> (512, 640): multiples of 8 (the latent is 1/8 of the picture) within sane bounds."""
    if not text:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise bad_option(f"{option} {text}: write it as WIDTHxHEIGHT, e.g. 512x640") from None
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise bad_option(f"{option} {text}: each side must be from {MIN_SIDE} to {MAX_SIDE} pixels")
        if side % 8:
            lower = side - side % 8
            raise bad_option(f"{option} {text}: {side} is not a multiple of 8; use {lower} or {lower + 8}")
    return width, height


def lora_families(path: str | Path) -> set[str]:
    """The families a kohya LoRA file can belong to, from its keys and metadata (all three when unknown)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        keys = list(f.keys())

        def width(suffix: str) -> int | None:
            key = next((k for k in keys if k.endswith(suffix)), None)
            return f.get_slice(key).get_shape()[1] if key else None

        te_width = width("self_attn_k_proj.lora_down.weight")
        context = width("attn2_to_k.lora_down.weight")
    version = meta.get("ss_base_model_version", "") + " " + meta.get("modelspec.architecture", "")
    # kohya names SDXL's text encoders te1/te2 and its UNet modules by their SGM names (input_blocks_...)
    if (any(k.startswith(("lora_te1_", "lora_te2_", "lora_unet_input_blocks_", "lora_unet_output_blocks_"))
            for k in keys) or "sdxl" in version or "stable-diffusion-xl" in version or context == 2048):
        return {"sdxl"}
    if "sd_v2" in version or "stable-diffusion-v2" in version or meta.get("ss_v2") == "True" or 1024 in (
            te_width, context):
        return {"sd2"}
    if "sd_v1" in version or "stable-diffusion-v1" in version or 768 in (te_width, context):
        return {"sd1"}
    if any(k.startswith(("lora_te_", "lora_unet_down_blocks_", "lora_unet_up_blocks_")) for k in keys):
        return {"sd1", "sd2"}
    return set(FAMILY_NAMES)


def base_model_family(source: str | Path) -> str | None:
    """The family of a local base model without loading it; None for a hub id or a pickled .ckpt
    (reading those means loading them)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _diffusers_family(path)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] != b"{":  # not safetensors
        return None
    from ..train import models

    # the detection helpers read only the header and a few shapes (models reads tensors lazily)
    state_dict, metadata = models._read_checkpoint(path)
    family, _ = models._detect(state_dict, set(state_dict.keys()), dict(metadata), path.name)
    return family


def _diffusers_family(folder: Path) -> str | None:
    def read(*parts) -> dict:
        try:
            return json.loads(folder.joinpath(*parts).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    index, unet = read("model_index.json"), read("unet", "config.json")
    if not index and not unet:
        return None
    if (index.get("text_encoder_2") or [None])[0] or unet.get("addition_embed_type") == "text_time":
        return "sdxl"
    text = read("text_encoder", "config.json")
    return "sd2" if text.get("hidden_act") == "gelu" or unet.get("cross_attention_dim") == 1024 else "sd1"


def check_lora_families(loras: Iterable[str | Path], base_model: str | Path, option: str = "--lora") -> None:
    """Refuse a LoRA made for another family than the base model (read from its files), naming both."""
    loras = list(loras)
    base = base_model_family(base_model) if loras else None
    if base is not None:
        check_loras_fit(loras, base, f"--base-model {Path(base_model).name}", option)


def check_loras_fit(loras: Iterable[str | Path], family: str, model: str = "the base model",
                    option: str = "--lora") -> None:
    """Refuse a LoRA whose keys or metadata say it was made for another family than `family`."""
    for lora in loras:
        possible = lora_families(lora)
        if family not in possible:
            theirs = " or ".join(FAMILY_NAMES[f] for f in sorted(possible))
            raise HeadshotError(
                f"{option} {Path(lora).name} is a {theirs} LoRA but {model} is {FAMILY_NAMES[family]}: use a "
                f"LoRA trained on {FAMILY_NAMES[family]} or a {theirs} base model", "lora_family_mismatch")


def check_generate_options(*, style: str, style_dirs=(), count: int, seed: int, steps: int | None = None,
                           trigger: str | None = None, class_word: str | None = None, loras=()) -> None:
    """generate's own options, before any model loads (the finishing options are checked by finish)."""
    from .styles import get_style

    safe_name(style, "--style")
    for value, option in ((trigger, "--trigger"), (class_word, "--class")):
        if value is not None:
            safe_name(value, option)
    check_positive(count, "--count")
    check_positive(steps, "--steps")
    check_seeds(seed, count)
    get_style(style, style_dirs)  # an unknown style says "did you mean"
    check_lora_files(loras)
