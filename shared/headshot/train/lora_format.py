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

import math
import re
from collections.abc import Mapping, Sequence
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


# files and metadata live in their own modules; their names stay importable from here
from .lora_files import load_lora, save_lora, write_a1111_sidecar  # noqa: E402
from .lora_metadata import kohya_metadata  # noqa: E402
