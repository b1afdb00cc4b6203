"""The kohya LoRA file format: key names, peft <-> kohya state dicts, ss_* metadata, A1111 sidecar.

kohya's sd-scripts defined the LoRA layout that ComfyUI's LoraLoader, AUTOMATIC1111's built-in Lora
extension (and Forge) and diffusers' ``load_lora_weights`` all read. Per adapted module a file holds

    <name>.lora_down.weight   [rank, in]  (a Conv2d: [rank, in, kh, kw])
    <name>.lora_up.weight     [out, rank] (a Conv2d: [out, rank, 1, 1])
    <name>.alpha              0-dim float; the update is up @ down * alpha / rank

and ``<name>`` is a component prefix plus the module's path with "." replaced by "_":

* ``lora_unet_``: SD1/SD2 UNet modules by their diffusers path (sd-scripts trains SD1/SD2 on a
  diffusers-layout UNet), SDXL UNet modules by the original SGM (Stability generative-models) path,
  because sd-scripts trains SDXL on an SGM-layout UNet: ``input_blocks_4_1_...``,
  ``middle_block_1_...``, ``output_blocks_0_1_...``. See :func:`kohya_module_name`.
* ``lora_te_`` (SD1/SD2) or ``lora_te1_`` / ``lora_te2_`` (SDXL): Hugging Face CLIP module paths,
  e.g. ``lora_te1_text_model_encoder_layers_0_self_attn_q_proj``.

The training engine trains with peft on diffusers/transformers modules; :func:`peft_to_kohya` and
:func:`kohya_to_peft` convert between the two layouts without changing a single value.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import random
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headshot.errors import HeadshotError

__all__ = [
    "COMPONENT_PREFIX",
    "FAMILIES",
    "kohya_unet_targets",
    "text_encoder_targets",
    "kohya_module_name",
    "peft_to_kohya",
    "kohya_to_peft",
    "save_lora",
    "load_lora",
    "kohya_metadata",
    "write_a1111_sidecar",
]

COMPONENT_PREFIX = {"unet": "lora_unet", "te": "lora_te", "te1": "lora_te1", "te2": "lora_te2"}

FAMILIES = ("sd1", "sd2", "sdxl")

_FAMILY_COMPONENTS = {
    "sd1": ("unet", "te"),
    "sd2": ("unet", "te"),
    "sdxl": ("unet", "te1", "te2"),
}

# ss_base_model_version exactly as sd-scripts writes it (model_util / sdxl_model_util)
_BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}

# modelspec.architecture ids from sd-scripts' library/sai_model_spec.py, "/lora" appended for LoRAs
_ARCH = {
    "sd1": "stable-diffusion-v1",
    "sd2": "stable-diffusion-v2-512",
    "sd2_v": "stable-diffusion-v2-768-v",
    "sdxl": "stable-diffusion-xl-v1-base",
}
# sd-scripts: SDXL LoRAs are named after the SGM implementation, SD1/SD2 LoRAs after diffusers
_IMPL_SGM = "https://github.com/Stability-AI/generative-models"
_IMPL_DIFFUSERS = "diffusers"

_A1111_SD_VERSION = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}

_KOHYA_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")

# kohya's text-encoder target set: every Linear inside CLIPAttention and CLIPMLP
_TE_TARGET = re.compile(r"(?:^|\.)encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])$")

_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)*(?P<module>.+?)\.lora_(?P<ab>A|B)(?:\.(?P<adapter>[^.]+))?\.weight$"
)

# full-size SDXL base, used when kohya_module_name is not told the UNet's config
_SDXL_DEFAULT_LAYOUT = {
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 2,
}

# diffusers ResnetBlock2D member -> SGM ResBlock member
_RESNET_TO_SGM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

# diffusers top-level UNet module -> SGM path
_TOP_TO_SGM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


# --------------------------------------------------------------------------------------------
# target sets


def _plain_modules(model: nn.Module):
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
        name + "." for name, module in _plain_modules(unet) if type(module).__name__ == "Transformer2DModel"
    ]
    if not transformer_prefixes:
        raise HeadshotError(
            f"{type(unet).__name__} has no Transformer2DModel blocks, so kohya's LoRA target set is empty; "
            "pass a Stable Diffusion UNet2DConditionModel (SD1, SD2 or SDXL).",
            "lora_no_targets",
        )
    targets = []
    seen = set()
    for name, module in _plain_modules(unet):
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
    for name, module in _plain_modules(text_encoder):
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


# --------------------------------------------------------------------------------------------
# names


def _check_family(family: str, component: str | None = None) -> None:
    if family not in _FAMILY_COMPONENTS:
        raise HeadshotError(
            f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}.", "lora_bad_family"
        )
    if component is not None and component not in _FAMILY_COMPONENTS[family]:
        raise HeadshotError(
            f"component {component!r} does not exist in a {family} LoRA; "
            f"{family} LoRAs have {', '.join(_FAMILY_COMPONENTS[family])}.",
            "lora_bad_component",
        )


def _config_get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


class _SgmLayout:
    """Where each diffusers UNet block sits in the SGM UNet, derived from the UNet's config."""

    def __init__(self, unet_config: Any = None):
        cfg = _SDXL_DEFAULT_LAYOUT if unet_config is None else getattr(unet_config, "config", unet_config)
        down = _config_get(cfg, "down_block_types")
        up = _config_get(cfg, "up_block_types")
        if not down or not up:
            raise HeadshotError(
                "the UNet config has no down_block_types / up_block_types, so its SGM block layout is "
                "unknown; pass the UNet2DConditionModel or its .config.",
                "lora_bad_config",
            )
        self.down = tuple(down)
        self.up = tuple(up)
        n = len(self.down)
        lpb = _config_get(cfg, "layers_per_block", 2)
        self.layers = [int(lpb)] * n if isinstance(lpb, int) else [int(x) for x in lpb]
        if len(self.layers) != n or len(self.up) != n:
            raise HeadshotError(
                f"the UNet config is inconsistent: {n} down blocks, {len(self.up)} up blocks, "
                f"layers_per_block={lpb!r}; pass the UNet's own config.",
                "lora_bad_config",
            )
        # diffusers' up blocks mirror the down blocks, each with one extra layer
        self.up_layers = [x + 1 for x in reversed(self.layers)]

    def input_index(self, level: int, j: int) -> int:
        # input_blocks.0 is conv_in; every level but the last ends with a downsampler block
        return 1 + sum(self.layers[l] + 1 for l in range(level)) + j

    def output_index(self, level: int, j: int) -> int:
        return sum(self.up_layers[u] for u in range(level)) + j

    def to_sgm(self, name: str) -> str | None:
        if name in _TOP_TO_SGM:
            return _TOP_TO_SGM[name]
        for top, sgm in _TOP_TO_SGM.items():
            if name.startswith(top + "."):
                return sgm + name[len(top):]

        m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)(?:\.(.+))?", name)
        if m:
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if level >= len(self.down):
                return None
            if kind == "downsamplers":
                if j != 0 or level == len(self.down) - 1:
                    return None
                block = f"input_blocks.{self.input_index(level, self.layers[level])}.0"
                return _join(block, _sub_first(rest, "conv", "op"))
            if j >= self.layers[level]:
                return None
            block = f"input_blocks.{self.input_index(level, j)}"
            return _inner(block, kind, rest)

        m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)(?:\.(.+))?", name)
        if m:
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if level >= len(self.up):
                return None
            if kind == "upsamplers":
                if j != 0 or level == len(self.up) - 1:
                    return None
                has_attention = "CrossAttn" in self.up[level]
                index = self.output_index(level, self.up_layers[level] - 1)
                return _join(f"output_blocks.{index}.{2 if has_attention else 1}", rest)
            if j >= self.up_layers[level]:
                return None
            return _inner(f"output_blocks.{self.output_index(level, j)}", kind, rest)

        m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)(?:\.(.+))?", name)
        if m:
            kind, j, rest = m[1], int(m[2]), m[3]
            if kind == "attentions":
                return _join("middle_block.1", rest) if j == 0 else None
            if j > 1:
                return None
            return _inner(f"middle_block.{0 if j == 0 else 2}", "resnets_mid", rest)
        return None


def _join(block: str, rest: str | None) -> str:
    return block if not rest else f"{block}.{rest}"


def _sub_first(rest: str | None, old: str, new: str) -> str | None:
    if rest is None:
        return None
    parts = rest.split(".")
    if parts[0] == old:
        parts[0] = new
    return ".".join(parts)


def _inner(block: str, kind: str, rest: str | None) -> str | None:
    if kind == "attentions":
        return _join(f"{block}.1", rest)
    # a resnet: SGM names its layers differently
    head = block if kind == "resnets_mid" else f"{block}.0"
    if rest is None:
        return head
    first, _, tail = rest.partition(".")
    mapped = _RESNET_TO_SGM.get(first)
    if mapped is None:
        return None
    return _join(f"{head}.{mapped}", tail)


def kohya_module_name(family: str, component: str, diffusers_module: str, *, unet_config: Any = None) -> str:
    """The kohya LoRA name of a diffusers/transformers module.

    * sd1/sd2 UNet: ``lora_unet_`` + the diffusers path with "." -> "_".
    * sdxl UNet: ``lora_unet_`` + the SGM path, as sd-scripts names SDXL LoRAs. With L the level,
      j the index inside it and n_l the level's ``layers_per_block``:
      ``down_blocks.L.{attentions|resnets}.j`` -> ``input_blocks.(1 + sum_{l<L}(n_l + 1) + j).{1|0}``,
      ``down_blocks.L.downsamplers.0`` -> ``input_blocks.(1 + sum_{l<=L}(n_l + 1) - 1).0`` (conv -> op),
      ``mid_block.attentions.0`` -> ``middle_block.1`` (resnets 0/1 -> middle_block.0/2),
      ``up_blocks.U.{attentions|resnets}.j`` -> ``output_blocks.(sum_{u<U}(m_u) + j).{1|0}`` with m_u
      the up level's layer count (its mirrored n + 1). Inside a transformer the names are unchanged
      (``transformer_blocks_0_attn1_to_q``); resnet members are renamed (conv1 -> in_layers_2, ...).
      ``unet_config`` (a UNet, its config, or a dict) gives the layout; without it the full-size
      SDXL base layout is assumed (layers_per_block 2, three levels).
    * text encoders: ``lora_te_`` (sd1/sd2) or ``lora_te1_`` / ``lora_te2_`` (sdxl) + the HF path in
      the transformers 4 layout (``text_model.encoder.layers...``; transformers 5's CLIPTextModel has
      no ``text_model.`` level, and it is added back here, as every loader expects it).
    """
    _check_family(family, component)
    name = diffusers_module.strip(".")
    if not name:
        raise HeadshotError("an empty module name has no kohya name; pass the module's dotted path.", "lora_bad_name")
    path = name
    if component == "unet" and family == "sdxl":
        sgm = _SgmLayout(unet_config).to_sgm(name)
        if sgm is None:
            raise HeadshotError(
                f"SDXL UNet module {name!r} has no place in the SGM layout kohya names SDXL LoRAs by; "
                "check that the module belongs to this UNet and that unet_config is this UNet's config.",
                "lora_bad_name",
            )
        path = sgm
    elif component != "unet":
        path = _clip_v4_path(name)
    return f"{COMPONENT_PREFIX[component]}_{path.replace('.', '_')}"


def _clip_v4_path(name: str) -> str:
    """A CLIP text-encoder module path in the transformers 4 layout, which kohya names follow.

    transformers 5 dropped the ``text_model.`` wrapper from CLIPTextModel (CLIPTextModelWithProjection
    keeps it), so ``encoder.layers.0.self_attn.q_proj`` is named as ``text_model.encoder.layers...``.
    """
    if name.split(".", 1)[0] in ("embeddings", "encoder", "final_layer_norm"):
        return "text_model." + name
    return name


# --------------------------------------------------------------------------------------------
# state dicts


def _parse_peft_state(component: str, peft_state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{module: {"A": tensor, "B": tensor}} from peft keys, rejecting anything that is not plain LoRA."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    adapters: set[str] = set()
    bad: list[str] = []
    for key, tensor in peft_state.items():
        m = _PEFT_KEY.match(key)
        if m is None:
            bad.append(key)
            continue
        if m["adapter"] is not None:
            adapters.add(m["adapter"])
        slot = modules.setdefault(m["module"], {})
        if m["ab"] in slot:
            raise HeadshotError(
                f"{component}: module {m['module']!r} has two lora_{m['ab']} weights (several adapters in one "
                "state dict?); pass one adapter's state, e.g. get_peft_model_state_dict(model, adapter_name=...).",
                "lora_bad_state",
            )
        if not isinstance(tensor, torch.Tensor):
            raise HeadshotError(f"{component}: {key} is a {type(tensor).__name__}, not a tensor.", "lora_bad_state")
        slot[m["ab"]] = tensor
    if bad:
        raise HeadshotError(
            f"{component}: {len(bad)} key(s) are not plain LoRA weights (<module>.lora_A.weight / "
            f"<module>.lora_B.weight): {_preview(bad)}. DoRA, LoRA biases and embedding LoRA cannot be "
            "written in kohya's LoRA format; train with use_dora=False and lora_bias=False.",
            "lora_bad_state",
        )
    if len(adapters) > 1:
        raise HeadshotError(
            f"{component}: the state holds several adapters ({', '.join(sorted(adapters))}); pass one.",
            "lora_bad_state",
        )
    incomplete = [mod for mod, slot in modules.items() if set(slot) != {"A", "B"}]
    if incomplete:
        raise HeadshotError(
            f"{component}: module(s) with only one of lora_A / lora_B: {_preview(incomplete)}; "
            "pass the complete adapter state dict.",
            "lora_bad_state",
        )
    return modules


def _preview(items: Sequence[str], n: int = 8) -> str:
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f" ... and {len(items) - n} more" if len(items) > n else "")


def peft_to_kohya(
    family: str,
    component: str,
    peft_state: Mapping[str, torch.Tensor],
    rank: int,
    alpha: float,
    module_names: Sequence[str] | None = None,
    *,
    unet_config: Any = None,
) -> dict[str, torch.Tensor]:
    """One component's peft LoRA state -> kohya tensors (lora_down / lora_up / alpha per module).

    ``peft_state`` keys are ``<module>.lora_A.weight`` / ``<module>.lora_B.weight``, optionally with
    ``base_model.model.`` prefixes or an adapter name (``.lora_A.default.weight``). Values are passed
    through unchanged (lora_A -> lora_down, lora_B -> lora_up; Conv2d weights keep their 4-D shapes).
    ``rank`` must be every module's rank; ``alpha`` is written as each module's 0-dim float32 alpha.
    ``module_names``, when given, are the modules the adapter was set up on: each must be in the state
    and nothing else may be (an engine that silently adapted fewer modules fails here).
    ``unet_config`` gives the SDXL UNet layout (see :func:`kohya_module_name`).
    """
    _check_family(family, component)
    rank = int(rank)
    if rank <= 0:
        raise HeadshotError(f"rank must be a positive integer, got {rank}.", "lora_bad_state")
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise HeadshotError(f"alpha must be a finite number, got {alpha}.", "lora_bad_state")
    modules = _parse_peft_state(component, peft_state)
    if not modules:
        raise HeadshotError(f"{component}: the peft state dict is empty; nothing to write.", "lora_bad_state")

    order = list(modules)
    if module_names is not None:
        wanted = list(dict.fromkeys(module_names))
        missing = [m for m in wanted if m not in modules]
        extra = [m for m in modules if m not in set(wanted)]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} target module(s) have no weights: {_preview(missing)}")
            if extra:
                parts.append(f"{len(extra)} module(s) are not in module_names: {_preview(extra)}")
            raise HeadshotError(
                f"{component}: the peft state does not match the target modules; " + "; ".join(parts)
                + ". Check the LoraConfig target_modules the engine used.",
                "lora_bad_state",
            )
        order = wanted

    layout = _SgmLayout(unet_config) if (family == "sdxl" and component == "unet") else None
    out: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}
    bad_rank = []
    for module in order:
        down, up = modules[module]["A"], modules[module]["B"]
        if down.shape[0] != rank or up.shape[1] != rank:
            bad_rank.append(f"{module} (lora_A {tuple(down.shape)}, lora_B {tuple(up.shape)})")
            continue
        if layout is not None:
            sgm = layout.to_sgm(module)
            if sgm is None:
                raise HeadshotError(
                    f"SDXL UNet module {module!r} has no place in the SGM layout; "
                    "pass unet_config=<the UNet> if it is not full-size SDXL base.",
                    "lora_bad_name",
                )
            name = f"{COMPONENT_PREFIX['unet']}_{sgm.replace('.', '_')}"
        else:
            name = kohya_module_name(family, component, module)
        if name in owner:
            raise HeadshotError(
                f"{component}: modules {owner[name]!r} and {module!r} both map to kohya name {name}.",
                "lora_bad_name",
            )
        owner[name] = module
        out[f"{name}.lora_down.weight"] = down.detach()
        out[f"{name}.lora_up.weight"] = up.detach()
        out[f"{name}.alpha"] = torch.tensor(alpha, dtype=torch.float32)
    if bad_rank:
        raise HeadshotError(
            f"{component}: {len(bad_rank)} module(s) are not rank {rank}: {_preview(bad_rank, 4)}; "
            "pass the rank the adapter was trained with (per-module ranks cannot be described by ss_network_dim).",
            "lora_bad_state",
        )
    return out


def _as_text_encoder_map(family: str, text_encoders: Any) -> dict[str, nn.Module]:
    if text_encoders is None:
        return {}
    comps = _FAMILY_COMPONENTS[family][1:]
    if isinstance(text_encoders, Mapping):
        result = {k: v for k, v in text_encoders.items() if v is not None}
        unknown = [k for k in result if k not in comps]
        if unknown:
            raise HeadshotError(
                f"text encoder key(s) {unknown} are not {family} components; use {', '.join(comps)}.",
                "lora_bad_component",
            )
        return result
    if isinstance(text_encoders, nn.Module):
        text_encoders = [text_encoders]
    encoders = list(text_encoders)
    if len(encoders) > len(comps):
        raise HeadshotError(
            f"{family} has {len(comps)} text encoder(s) but {len(encoders)} were given.", "lora_bad_component"
        )
    return {c: te for c, te in zip(comps, encoders) if te is not None}


def kohya_to_peft(
    family: str,
    kohya_state: Mapping[str, torch.Tensor],
    unet: nn.Module | None,
    text_encoders: Any = None,
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """kohya tensors -> ({component: peft state}, {"<component>.<module>": alpha}).

    Components are "unet" and "te" (sd1/sd2) or "te1"/"te2" (sdxl); only those with weights appear.
    Peft keys are ``<module>.lora_A.weight`` / ``<module>.lora_B.weight`` with diffusers/transformers
    module paths (no prefix, no adapter name), as ``get_peft_model_state_dict`` returns them. Names
    are resolved against the given models (``text_encoders``: one module, a list in te1/te2 order, or
    {component: module}); a module without an alpha gets alpha = rank, as kohya does.
    """
    _check_family(family)
    models: dict[str, nn.Module] = {}
    if unet is not None:
        models["unet"] = unet
    models.update(_as_text_encoder_map(family, text_encoders))

    # kohya name -> (component, module name, module)
    lookup: dict[str, tuple[str, str, nn.Module]] = {}
    for comp, model in models.items():
        layout = _SgmLayout(model) if (family == "sdxl" and comp == "unet") else None
        for name, module in _plain_modules(model):
            if not name or not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            if layout is not None:
                sgm = layout.to_sgm(name)
                if sgm is None:
                    continue
                kname = f"{COMPONENT_PREFIX['unet']}_{sgm.replace('.', '_')}"
            elif comp == "unet":
                kname = f"{COMPONENT_PREFIX[comp]}_{name.replace('.', '_')}"
            else:
                kname = f"{COMPONENT_PREFIX[comp]}_{_clip_v4_path(name).replace('.', '_')}"
            lookup.setdefault(kname, (comp, name, module))

    grouped: dict[str, dict[str, torch.Tensor]] = {}
    unsupported: list[str] = []
    for key, tensor in kohya_state.items():
        base, _, suffix = key.partition(".")
        if suffix not in _KOHYA_SUFFIXES:
            unsupported.append(key)
            continue
        grouped.setdefault(base, {})[suffix] = tensor
    if unsupported:
        raise HeadshotError(
            f"{len(unsupported)} key(s) are not plain kohya LoRA weights: {_preview(unsupported)}. "
            "LoCon/LoHa/LoKr/DoRA files cannot be converted to peft LoRA; use a plain LoRA "
            "(sd-scripts networks.lora).",
            "lora_bad_state",
        )

    unmatched = [base for base in grouped if base not in lookup]
    if unmatched:
        hint = ""
        if any(b.startswith("lora_te") for b in unmatched) and not any(c != "unet" for c in models):
            hint = " Pass the text encoders too: the file has text-encoder weights."
        if unet is None and any(b.startswith("lora_unet_") for b in unmatched):
            hint += " Pass the UNet too: the file has UNet weights."
        raise HeadshotError(
            f"{len(unmatched)} LoRA module(s) match no module of this {family} model: {_preview(unmatched)}. "
            f"The LoRA was probably trained for another model family or size.{hint}",
            "lora_unknown_modules",
        )

    states: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    problems: list[str] = []
    for base, parts in grouped.items():
        comp, name, module = lookup[base]
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            problems.append(f"{base}: lacks lora_down or lora_up")
            continue
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        if down.ndim < 2 or up.ndim < 2:
            problems.append(f"{base}: weights of shape {tuple(down.shape)}/{tuple(up.shape)} are not matrices")
            continue
        rank = down.shape[0]
        if up.shape[1] != rank:
            problems.append(f"{base}: lora_down rank {rank} but lora_up rank {up.shape[1]}")
            continue
        in_dim = module.in_features if isinstance(module, nn.Linear) else module.in_channels
        out_dim = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        if down.shape[1] != in_dim or up.shape[0] != out_dim:
            problems.append(
                f"{base}: shapes {tuple(down.shape)}/{tuple(up.shape)} do not fit {name} ({in_dim} -> {out_dim})"
            )
            continue
        state = states.setdefault(comp, {})
        state[f"{name}.lora_A.weight"] = down
        state[f"{name}.lora_B.weight"] = up
        alpha = parts.get("alpha")
        alphas[f"{comp}.{name}"] = float(alpha.item()) if alpha is not None else float(rank)
    if problems:
        raise HeadshotError(
            f"{len(problems)} LoRA module(s) cannot be applied: {_preview(problems, 4)}. "
            "The file is damaged or made for a different model.",
            "lora_bad_state",
        )
    return states, alphas


# --------------------------------------------------------------------------------------------
# files


def _meta_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _addnet_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """sshs_model_hash / sshs_legacy_hash as sd-webui-additional-networks computes them.

    The model hash is the SHA-256 of the tensor data (everything after the safetensors header); the
    legacy hash is the SHA-256 of 64 KiB from offset 1 MiB of a file whose header holds only the
    ss_* metadata, first 8 hex digits.
    """
    from safetensors.torch import save

    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    blob = save(dict(tensors), metadata=ss_only or None)
    header_len = int.from_bytes(blob[:8], "little")
    model_hash = hashlib.sha256(blob[8 + header_len:]).hexdigest()
    legacy_hash = hashlib.sha256(blob[0x100000:0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy_hash


def save_lora(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Write a kohya LoRA .safetensors file atomically (a temporary file, then a rename).

    Tensors are written detached, on the CPU and contiguous; metadata values are written as strings
    (numbers and booleans with str(), dicts and lists as JSON; None values are left out). When the
    metadata has ss_* keys, sshs_model_hash / sshs_legacy_hash are added as sd-scripts does.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if not tensors:
        raise HeadshotError(
            f"no tensors to write to {path}; pass the LoRA state from peft_to_kohya.", "lora_bad_state"
        )
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise HeadshotError(
                f"{key} is a {type(tensor).__name__}, not a tensor; cannot write {path}.", "lora_bad_state"
            )
        out[str(key)] = tensor.detach().to("cpu").contiguous()
    meta = {str(k): _meta_str(v) for k, v in (metadata or {}).items() if v is not None}
    if any(k.startswith("ss_") for k in meta):
        meta.pop("sshs_model_hash", None)
        meta.pop("sshs_legacy_hash", None)
        meta["sshs_model_hash"], meta["sshs_legacy_hash"] = _addnet_hashes(out, meta)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(out, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise HeadshotError(
                f"cannot write LoRA {path}: {exc}. Check free disk space and permissions.", "lora_write_failed"
            ) from exc
        raise


def load_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a kohya LoRA .safetensors file: (tensors, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise HeadshotError(
            f"LoRA file {path} does not exist; check the path or train the LoRA first.", "lora_not_found"
        )
    if not path.is_file():
        raise HeadshotError(
            f"{path} is a folder, not a LoRA file; pass the .safetensors file inside it.", "lora_not_found"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
        with open(path, "rb") as fh:
            head = fh.read(4)
        pickled = head[:2] == b"PK" or head[:1] == b"\x80"  # torch.save zip, or a bare pickle
        kind = "a pickled PyTorch file (.pt/.ckpt)" if pickled else "not a safetensors file"
        raise HeadshotError(
            f"{path} is {kind} ({exc}); LoRAs are read only in .safetensors format. "
            "Re-save it as .safetensors (kohya sd-scripts: --save_model_as safetensors).",
            "lora_not_safetensors",
        ) from exc
    if not any(k.endswith((".lora_down.weight", ".lora_up.weight")) for k in tensors):
        if any(".lora_A." in k or ".lora_B." in k for k in tensors):
            why = "it is a diffusers/peft-format LoRA (lora_A/lora_B keys), not kohya format"
        elif not tensors:
            why = "it holds no tensors"
        else:
            why = f"none of its {len(tensors)} keys (e.g. {next(iter(tensors))}) is a kohya LoRA weight"
        raise HeadshotError(
            f"{path} is not a kohya LoRA: {why}. Pass a LoRA with lora_down/lora_up weights "
            "(as sd-scripts and Headshot Studio write them), not a checkpoint or embedding.",
            "lora_no_keys",
        )
    return tensors, metadata


# --------------------------------------------------------------------------------------------
# metadata


def _resolution(resolution: Any) -> tuple[int, int]:
    try:
        if isinstance(resolution, str):
            parts = [int(p) for p in re.split(r"[,x ]+", resolution.strip("()[] ")) if p]
        elif isinstance(resolution, (int, float)):
            parts = [int(resolution)]
        else:
            parts = [int(p) for p in resolution]
    except (TypeError, ValueError):
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise HeadshotError(
            f"resolution {resolution!r} is not a size; pass 512, (768, 1024) or \"768,1024\" (width, height).",
            "lora_bad_metadata",
        )
    return parts[0], parts[1]


def _dataset_dirs(dataset_dirs: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    out = {}
    for name, info in (dataset_dirs or {}).items():
        if not isinstance(info, Mapping):
            raise HeadshotError(
                f"dataset_dirs[{name!r}] must be a dict with n_repeats and img_count, got {info!r}.",
                "lora_bad_metadata",
            )
        repeats = info.get("n_repeats", info.get("num_repeats"))
        count = info.get("img_count", info.get("image_count"))
        if repeats is None or count is None:
            raise HeadshotError(
                f"dataset_dirs[{name!r}] needs n_repeats and img_count (kohya's ss_dataset_dirs), got {dict(info)}.",
                "lora_bad_metadata",
            )
        out[str(Path(str(name)).name)] = {"n_repeats": int(repeats), "img_count": int(count)}
    return out


def _tag_frequency(tag_frequency: Mapping[str, Any], default_dir: str) -> dict[str, dict[str, int]]:
    if not tag_frequency:
        return {}
    values = list(tag_frequency.values())
    if all(isinstance(v, Mapping) for v in values):
        return {
            str(Path(str(d)).name): {str(t): int(c) for t, c in tags.items()} for d, tags in tag_frequency.items()
        }
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {default_dir: {str(t): int(c) for t, c in tag_frequency.items()}}
    raise HeadshotError(
        "tag_frequency must be {tag: count} or {folder: {tag: count}}; got a mix of both.", "lora_bad_metadata"
    )


# training-dict keys that have a different ss_* name in sd-scripts
_TRAINING_ALIASES = {
    "lr": "ss_learning_rate",
    "learning_rate": "ss_learning_rate",
    "unet_lr": "ss_unet_lr",
    "text_encoder_lr": "ss_text_encoder_lr",
    "te_lr": "ss_text_encoder_lr",
    "lr_scheduler": "ss_lr_scheduler",
    "scheduler": "ss_lr_scheduler",
    "seed": "ss_seed",
    "max_train_steps": "ss_max_train_steps",
    "batch_size": "ss_batch_size_per_device",
    "train_batch_size": "ss_batch_size_per_device",
    "epochs": "ss_num_epochs",
    "num_epochs": "ss_num_epochs",
    "epoch": "ss_epoch",
    "mixed_precision": "ss_mixed_precision",
    "clip_skip": "ss_clip_skip",
    "sd_model_name": "ss_sd_model_name",
    "base_model": "ss_sd_model_name",
    "sd_model_hash": "ss_new_sd_model_hash",
    "warmup_steps": "ss_lr_warmup_steps",
    "lr_warmup_steps": "ss_lr_warmup_steps",
    "num_train_images": "ss_num_train_images",
    "num_reg_images": "ss_num_reg_images",
    "training_started_at": "ss_training_started_at",
    "training_finished_at": "ss_training_finished_at",
    "session_id": "ss_session_id",
    "network_dropout": "ss_network_dropout",
    "comment": "ss_training_comment",
}
# consumed by kohya_metadata itself, never copied as ss_<key>
_TRAINING_CONSUMED = {"optimizer", "optimizer_args", "steps", "v_parameterization", "repeats", "title"}


def kohya_metadata(
    *,
    family: str,
    rank: int,
    alpha: float,
    output_name: str,
    trigger: str,
    class_word: str,
    tag_frequency: Mapping[str, Any],
    dataset_dirs: Mapping[str, Any],
    training: Mapping[str, Any],
    chosen_step: int | None,
    resolution: Any,
) -> dict[str, str]:
    """The safetensors metadata sd-scripts writes for a LoRA (ss_*, modelspec.*), plus headshot.*.

    ``tag_frequency``: {tag: count} for the one training folder, or {folder: {tag: count}}.
    ``dataset_dirs``: {folder: {"n_repeats": N, "img_count": M}}.
    ``training``: settings such as learning_rate, unet_lr, text_encoder_lr, lr_scheduler, optimizer
    (+ optimizer_args dict), seed, steps / max_train_steps, batch_size, epochs, mixed_precision,
    clip_skip, v_parameterization, sd_model_name, training_started_at; kohya names (learning_rate,
    lr_warmup_steps, ...) become ss_<name>; keys that already hold a dot or start with ss_ are kept
    as they are (e.g. "modelspec.author", "headshot.preset").
    ``chosen_step``: the step of the checkpoint this file holds, if selection picked one.
    Every value is a str; None values are written as "None", as sd-scripts does.
    """
    _check_family(family)
    training = dict(training or {})
    width, height = _resolution(resolution)
    v_param = bool(training.get("v_parameterization", False))
    trigger_phrase = " ".join(p for p in (str(trigger).strip(), str(class_word).strip()) if p)

    dirs = _dataset_dirs(dataset_dirs)
    repeats = training.get("repeats")
    if repeats is None and len(dirs) == 1:
        repeats = next(iter(dirs.values()))["n_repeats"]
    default_dir = next(iter(dirs)) if len(dirs) == 1 else f"{int(repeats or 1)}_{trigger_phrase}"
    tags = _tag_frequency(tag_frequency, default_dir)

    num_train_images = training.get("num_train_images")
    if num_train_images is None and dirs:
        # kohya counts images times repeats
        num_train_images = sum(d["n_repeats"] * d["img_count"] for d in dirs.values())

    optimizer = training.get("optimizer")
    opt_args = training.get("optimizer_args")
    if optimizer is not None and opt_args:
        if isinstance(opt_args, Mapping):
            opt_args = ",".join(f"{k}={v}" for k, v in opt_args.items())
        elif not isinstance(opt_args, str):
            opt_args = ",".join(str(a) for a in opt_args)
        optimizer = f"{optimizer}({opt_args})"

    steps = chosen_step if chosen_step is not None else training.get("steps", training.get("max_train_steps"))
    now = time.time()
    base_version = _BASE_MODEL_VERSION[family] + ("_v" if v_param and family != "sdxl" else "")

    meta: dict[str, Any] = {
        "ss_session_id": random.randint(0, 2**32),
        "ss_training_started_at": now,
        "ss_output_name": output_name,
        "ss_learning_rate": None,
        "ss_text_encoder_lr": None,
        "ss_unet_lr": None,
        "ss_num_train_images": num_train_images,
        "ss_num_reg_images": 0,
        "ss_num_epochs": None,
        "ss_batch_size_per_device": None,
        "ss_max_train_steps": training.get("steps"),
        "ss_lr_scheduler": None,
        "ss_network_module": "networks.lora",
        "ss_network_dim": int(rank),
        "ss_network_alpha": float(alpha),
        "ss_mixed_precision": None,
        "ss_v2": family == "sd2",
        "ss_base_model_version": base_version,
        "ss_clip_skip": None,
        "ss_seed": None,
        "ss_optimizer": optimizer,
        "ss_resolution": (width, height),
        "ss_tag_frequency": json.dumps(tags, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(dirs, ensure_ascii=False),
        "ss_reg_dataset_dirs": json.dumps({}),
        "ss_steps": steps,
        "ss_training_finished_at": now,
    }
    for key, value in training.items():
        if key in _TRAINING_CONSUMED:
            continue
        if key.startswith("ss_") or "." in key:
            meta[key] = value
        else:
            meta[_TRAINING_ALIASES.get(key, f"ss_{key}")] = value
    # these are ours to say, whatever the training dict held
    meta["ss_network_module"] = "networks.lora"
    meta["ss_network_dim"] = int(rank)
    meta["ss_network_alpha"] = float(alpha)
    meta["ss_base_model_version"] = base_version
    meta["ss_v2"] = family == "sd2"
    meta["ss_output_name"] = output_name
    meta["ss_steps"] = steps
    meta["ss_resolution"] = (width, height)

    arch = _ARCH["sd2_v" if (family == "sd2" and v_param) else family]
    started = float(meta["ss_training_started_at"]) if meta["ss_training_started_at"] is not None else now
    meta.update(
        {
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": f"{arch}/lora",
            "modelspec.implementation": _IMPL_SGM if family == "sdxl" else _IMPL_DIFFUSERS,
            "modelspec.title": training.get("title") or output_name,
            "modelspec.resolution": f"{width}x{height}",
            "modelspec.date": datetime.datetime.fromtimestamp(int(started)).isoformat(),
            "modelspec.prediction_type": "v" if v_param else "epsilon",
            "modelspec.trigger_phrase": trigger_phrase,
            "modelspec.usage_hint": f"Put '{trigger_phrase}' in the prompt.",
        }
    )
    if training.get("clip_skip") is not None:
        meta["modelspec.encoder_layer"] = str(training["clip_skip"])
    for key, value in training.items():  # explicit modelspec.* settings win
        if key.startswith("modelspec."):
            meta[key] = value

    meta["headshot.trigger"] = str(trigger)
    meta["headshot.class_word"] = str(class_word)
    if chosen_step is not None:
        meta["headshot.chosen_step"] = int(chosen_step)
    return {k: _meta_str(v) for k, v in meta.items()}


def write_a1111_sidecar(
    lora_path: str | os.PathLike,
    *,
    activation_text: str,
    preferred_weight: float,
    sd_version: str,
    description: str = "",
    notes: str = "",
    negative_text: str = "",
) -> Path:
    """Write ``<name>.json`` beside the LoRA: AUTOMATIC1111's per-LoRA user metadata.

    A1111 (1.6 to 1.10) reads "activation text" (added to the prompt with the LoRA), "preferred
    weight" (the multiplier put in <lora:name:w>), "sd version" ("SD1", "SD2", "SDXL"; decides in
    which model's LoRA tab it shows), "description", "negative text" and "notes". Keys already in an
    existing sidecar (e.g. a user's own edits) are kept unless written here.
    """
    lora_path = Path(lora_path)
    version = _A1111_SD_VERSION.get(str(sd_version).lower(), str(sd_version).upper())
    if version not in ("SD1", "SD2", "SDXL"):
        raise HeadshotError(
            f"sd_version {sd_version!r} is not one A1111 knows; use SD1, SD2 or SDXL (or sd1/sd2/sdxl).",
            "lora_bad_metadata",
        )
    weight = float(preferred_weight)
    if not (0.0 <= weight <= 2.0):
        raise HeadshotError(
            f"preferred_weight {weight} is outside A1111's 0..2 range; use e.g. 0.8 or 1.0.", "lora_bad_metadata"
        )
    sidecar = lora_path.with_suffix(".json")
    data: dict[str, Any] = {}
    if sidecar.exists():
        try:
            existing = json.loads(sidecar.read_text(encoding="utf-8"))
            if isinstance(existing, dict):
                data.update(existing)
        except (OSError, ValueError):
            pass  # an unreadable sidecar is replaced
    data.update(
        {
            "description": description,
            "sd version": version,
            "activation text": activation_text,
            "preferred weight": weight,
            "negative text": negative_text,
            "notes": notes,
        }
    )
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, sidecar)
    return sidecar
