"""Which family a kohya LoRA file was made for, from its keys, shapes and metadata, and whether it fits
a base model. Nothing is loaded: the safetensors header and two tensor shapes are read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..errors import HeadshotError
from .checkpoint_detection import base_model_family
from .family import Family
from .registry import families, get_family


def lora_families(path: str | Path) -> set[str]:
    """The names of the families a kohya LoRA file can belong to (all of them when nothing tells)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
        keys = list(f.keys())
        found = families_of_lora_keys(keys, metadata, lambda key: tuple(f.get_slice(key).get_shape()))
    return {family.name for family in found}


def families_of_lora_keys(
    keys: Iterable[str], metadata: Mapping[str, str], shape_of: Callable[[str], tuple[int, ...]]
) -> list[Family]:
    """The families a LoRA with these keys and metadata can belong to, in registry order.

    One rule: every clue narrows the candidates, strongest first, and a clue that would leave none
    (a damaged or hand-edited file) is ignored. The clues: the kohya names (text components te vs
    te1/te2, UNet blocks in diffusers or SGM layout), the widths the LoRA's first layers take (a text
    encoder's, the UNet's cross-attention's), and the base-model version in the metadata.
    """
    keys = list(keys)
    candidates = list(families())
    names = {key.split(".", 1)[0] for key in keys}
    for name in names:
        candidates = _narrow(candidates, functools.partial(_names_fit, kohya_name=name))

    context = _in_width(keys, "attn2_to_k.lora_down.weight", shape_of)
    if context is not None:
        candidates = _narrow(candidates, lambda f: f.context_width == context)
    for family in list(candidates):
        for encoder in family.text_encoders:
            width = _in_width(keys, "self_attn_k_proj.lora_down.weight", shape_of, f"lora_{encoder.component}_")
            if width is not None:
                candidates = _narrow(
                    candidates, functools.partial(_has_encoder, component=encoder.component, width=width)
                )

    version = metadata.get("ss_base_model_version", "") + " " + metadata.get("modelspec.architecture", "")
    candidates = _narrow(candidates, lambda f: any(marker in version for marker in f.metadata_markers))
    if metadata.get("ss_v2") == "True":
        candidates = _narrow(candidates, lambda f: f.ss_v2)
    return candidates


def _names_fit(family: Family, kohya_name: str) -> bool:
    """Whether a kohya module name (lora_te1_..., lora_unet_input_blocks_...) can be one of `family`'s."""
    if kohya_name.startswith("lora_unet_"):
        return kohya_name[len("lora_unet_") :].startswith(family.kohya_unet_blocks)
    if kohya_name.startswith("lora_te"):
        return any(kohya_name.startswith(f"lora_{c}_") for c in family.text_components)
    return True  # not a kohya LoRA name: says nothing


def _has_encoder(family: Family, component: str, width: int) -> bool:
    return any(e.component == component and e.width == width for e in family.text_encoders)


def _in_width(keys: list[str], suffix: str, shape_of, prefix: str = "") -> int | None:
    key = next((k for k in keys if k.endswith(suffix) and k.startswith(prefix)), None)
    return shape_of(key)[1] if key else None


def _narrow(candidates: list[Family], clue: Callable[[Family], bool]) -> list[Family]:
    kept = [f for f in candidates if clue(f)]
    return kept or candidates


def check_lora_families(loras: Iterable[str | Path], base_model: str | Path, option: str = "--lora") -> None:
    """Refuse a LoRA made for another family than the base model (read from its files), naming both."""
    loras = list(loras)
    base = base_model_family(base_model) if loras else None
    if base is not None:
        check_loras_fit(loras, base.name, f"--base-model {Path(base_model).name}", option)


def check_loras_fit(
    loras: Iterable[str | Path], family: str, model: str = "the base model", option: str = "--lora"
) -> None:
    """Refuse a LoRA whose keys or metadata say it was made for another family than `family`."""
    ours = get_family(family)
    for lora in loras:
        possible = lora_families(lora)
        if ours.name not in possible:
            theirs = " or ".join(get_family(f).title for f in sorted(possible))
            raise HeadshotError(
                f"{option} {Path(lora).name} is a {theirs} LoRA but {model} is {ours.title}: use a "
                f"LoRA trained on {ours.title} or a {theirs} base model",
                "lora_family_mismatch",
            )
