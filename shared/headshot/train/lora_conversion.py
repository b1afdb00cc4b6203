"""peft <-> kohya LoRA state dicts, converted without changing a single value.

The training engine trains with peft on diffusers/transformers modules and writes kohya files with
`peft_to_kohya`; the standalone sampler hooks kohya files into live modules after resolving their
names with `kohya_to_peft` (sampling.lora_patch). Both name modules by lora_names' one rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import HeadshotError
from ..families import Family
from .lora_names import KOHYA_SUFFIXES, check_component, kohya_module_name, kohya_name
from .lora_targets import plain_modules

_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)*(?P<module>.+?)\.lora_(?P<ab>A|B)(?:\.(?P<adapter>[^.]+))?\.weight$")


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
    family: str | Family,
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
    fam = check_component(family, component)
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
                f"{component}: the peft state does not match the target modules; "
                + "; ".join(parts)
                + ". Check the LoraConfig target_modules the engine used.",
                "lora_bad_state",
            )
        order = wanted

    out: dict[str, torch.Tensor] = {}
    owner: dict[str, str] = {}
    bad_rank = []
    for module in order:
        down, up = modules[module]["A"], modules[module]["B"]
        if down.shape[0] != rank or up.shape[1] != rank:
            bad_rank.append(f"{module} (lora_A {tuple(down.shape)}, lora_B {tuple(up.shape)})")
            continue
        name = kohya_module_name(fam, component, module, unet_config=unet_config)
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


def _as_text_encoder_map(family: Family, text_encoders: Any) -> dict[str, nn.Module]:
    if text_encoders is None:
        return {}
    comps = family.text_components
    if isinstance(text_encoders, Mapping):
        result = {k: v for k, v in text_encoders.items() if v is not None}
        unknown = [k for k in result if k not in comps]
        if unknown:
            raise HeadshotError(
                f"text encoder key(s) {unknown} are not {family.name} components; use {', '.join(comps)}.",
                "lora_bad_component",
            )
        return result
    if isinstance(text_encoders, nn.Module):
        text_encoders = [text_encoders]
    encoders = list(text_encoders)
    if len(encoders) > len(comps):
        raise HeadshotError(
            f"{family.name} has {len(comps)} text encoder(s) but {len(encoders)} were given.", "lora_bad_component"
        )
    return {c: te for c, te in zip(comps, encoders) if te is not None}


def kohya_to_peft(
    family: str | Family,
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
    fam = check_component(family)
    models: dict[str, nn.Module] = {}
    if unet is not None:
        models["unet"] = unet
    models.update(_as_text_encoder_map(fam, text_encoders))

    # kohya name -> (component, module name, module)
    lookup: dict[str, tuple[str, str, nn.Module]] = {}
    for comp, model in models.items():
        for name, module in plain_modules(model):
            if not name or not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            kname = kohya_name(fam, comp, name, model if comp == "unet" else None)
            if kname is not None:
                lookup.setdefault(kname, (comp, name, module))

    grouped: dict[str, dict[str, torch.Tensor]] = {}
    unsupported: list[str] = []
    for key, tensor in kohya_state.items():
        base, _, suffix = key.partition(".")
        if suffix not in KOHYA_SUFFIXES:
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
            f"{len(unmatched)} LoRA module(s) match no module of this {fam.name} model: {_preview(unmatched)}. "
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
