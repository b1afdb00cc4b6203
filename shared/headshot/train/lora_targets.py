"""kohya's LoRA target sets: which modules of a UNet and a CLIP text encoder an identity LoRA adapts."""

from __future__ import annotations

import re

from torch import nn

from ..errors import HeadshotError

# kohya's text-encoder target set: every Linear inside CLIPAttention and CLIPMLP
_TE_TARGET = re.compile(r"(?:^|\.)encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])$")


def plain_modules(model: nn.Module):
    """(name, module) for the model's own layers, seen through any peft LoRA wrapping.

    A peft-wrapped layer appears as ``<name>.base_layer``; it is reported as ``<name>``, and peft's
    own lora_A / lora_B / dropout sub-modules are skipped, so targets and names are the same before
    and after the engine injects its adapter.
    """
    for name, module in model.named_modules():
        parts = name.split(".") if name else []
        if any(p.startswith("lora_") for p in parts):
            continue
        while parts and parts[-1] == "base_layer":
            parts.pop()
        yield ".".join(parts), module


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


def _is_conv1x1(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)


def kohya_unet_targets(unet: nn.Module) -> list[str]:
    """Diffusers module names of kohya's default UNet LoRA targets.

    sd-scripts' ``networks.lora`` adapts every ``Linear`` and 1x1 ``Conv2d`` inside each
    ``Transformer2DModel``: proj_in, proj_out and, per transformer block, attn1/attn2 to_q, to_k,
    to_v, to_out.0 and ff.net.0.proj, ff.net.2. Full-size SD1.5 (and SD2) have 16 transformers of
    one block each: 16 * (2 + 10) = 192 modules. Full-size SDXL has 11 transformers holding 70
    blocks: 11 * 2 + 70 * 10 = 722 modules.
    """
    transformer_prefixes = [
        name + "." for name, module in plain_modules(unet) if type(module).__name__ == "Transformer2DModel"
    ]
    if not transformer_prefixes:
        raise HeadshotError(
            f"{type(unet).__name__} has no Transformer2DModel blocks, so kohya's LoRA target set is empty; "
            "pass a Stable Diffusion UNet2DConditionModel (SD1, SD2 or SDXL).",
            "lora_no_targets",
        )
    targets = []
    seen = set()
    for name, module in plain_modules(unet):
        if name in seen or not (_is_linear(module) or _is_conv1x1(module)):
            continue
        if any(name.startswith(p) for p in transformer_prefixes):
            seen.add(name)
            targets.append(name)
    return targets


def text_encoder_targets(text_encoder: nn.Module) -> list[str]:
    """kohya's text-encoder LoRA targets: q_proj, k_proj, v_proj, out_proj, fc1, fc2 of every CLIP layer.

    CLIP ViT-L (SD1, SDXL te1): 12 layers * 6 = 72 modules; OpenCLIP bigG (SDXL te2): 32 * 6 = 192.
    """
    targets = []
    seen = set()
    for name, module in plain_modules(text_encoder):
        if name not in seen and _is_linear(module) and _TE_TARGET.search(name):
            seen.add(name)
            targets.append(name)
    if not targets:
        raise HeadshotError(
            f"{type(text_encoder).__name__} has no CLIP encoder layers (encoder.layers.N.self_attn.q_proj ...); "
            "pass a transformers CLIPTextModel or CLIPTextModelWithProjection.",
            "lora_no_targets",
        )
    return targets
