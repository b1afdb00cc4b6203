"""kohya LoRA module names: the one rule that turns a diffusers/transformers module path into a key.

kohya's sd-scripts defined the LoRA layout that ComfyUI's LoraLoader, AUTOMATIC1111's built-in Lora
extension (and Forge) and diffusers' ``load_lora_weights`` all read. Per adapted module a file holds

    <name>.lora_down.weight   [rank, in]  (a Conv2d: [rank, in, kh, kw])
    <name>.lora_up.weight     [out, rank] (a Conv2d: [out, rank, 1, 1])
    <name>.alpha              0-dim float; the update is up @ down * alpha / rank

and ``<name>`` is ``lora_<component>_`` plus the module's path with "." replaced by "_":

* ``lora_unet_``: the UNet module by the path of the layout sd-scripts trains the family in
  (``Family.kohya_unet_path``): the diffusers path for SD1/SD2, the SGM path for SDXL
  (``input_blocks_4_1_...``; see headshot.families.sgm_layout).
* ``lora_te_`` (one text encoder) or ``lora_te1_`` / ``lora_te2_`` (SDXL): Hugging Face CLIP paths in
  the transformers 4 layout, e.g. ``lora_te1_text_model_encoder_layers_0_self_attn_q_proj``.
"""

from __future__ import annotations

from typing import Any

from ..errors import HeadshotError
from ..families import Family, get_family

KOHYA_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")


def component_prefix(component: str) -> str:
    """ "unet" -> "lora_unet", "te1" -> "lora_te1"."""
    return f"lora_{component}"


def components(family: Family) -> tuple[str, ...]:
    """The LoRA components of a family: the UNet, then its text encoders ("te" or "te1", "te2")."""
    return ("unet", *family.text_components)


def check_component(family: str | Family, component: str | None = None) -> Family:
    """The family, after checking that `component` is one of its LoRA components."""
    family = get_family(family)
    if component is not None and component not in components(family):
        raise HeadshotError(
            f"component {component!r} does not exist in a {family.name} LoRA; "
            f"{family.name} LoRAs have {', '.join(components(family))}.",
            "lora_bad_component",
        )
    return family


def kohya_name(family: Family, component: str, module: str, unet_config: Any = None) -> str | None:
    """The kohya name of `module`, or None when it has no place in the family's UNet layout."""
    if component == "unet":
        path = family.kohya_unet_path(module, unet_config)
        if path is None:
            return None
    else:
        path = clip_v4_path(module)
    return f"{component_prefix(component)}_{path.replace('.', '_')}"


def kohya_module_name(family: str | Family, component: str, diffusers_module: str, *, unet_config: Any = None) -> str:
    """The kohya LoRA name of a diffusers/transformers module, refusing one that has none.

    ``unet_config`` (a UNet, its config, or a dict) gives an SGM-named family's UNet layout; without
    it the full-size layout is assumed.
    """
    family = check_component(family, component)
    name = diffusers_module.strip(".")
    if not name:
        raise HeadshotError("an empty module name has no kohya name; pass the module's dotted path.", "lora_bad_name")
    kohya = kohya_name(family, component, name, unet_config)
    if kohya is None:
        raise HeadshotError(
            f"{family.title} UNet module {name!r} has no place in the SGM layout kohya names {family.title} LoRAs by; "
            "check that the module belongs to this UNet and pass unet_config=<the UNet> if it is not full-size.",
            "lora_bad_name",
        )
    return kohya


def clip_v4_path(name: str) -> str:
    """A CLIP text-encoder module path in the transformers 4 layout, which kohya names follow.

    transformers 5 dropped the ``text_model.`` wrapper from CLIPTextModel (CLIPTextModelWithProjection
    keeps it), so ``encoder.layers.0.self_attn.q_proj`` is named as ``text_model.encoder.layers...``.
    """
    if name.split(".", 1)[0] in ("embeddings", "encoder", "final_layer_norm"):
        return "text_model." + name
    return name
