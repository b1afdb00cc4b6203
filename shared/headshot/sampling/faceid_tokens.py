"""IP-Adapter FaceID outside a diffusers pipeline: what a host needs to apply it in its own attention.

A host that samples with its own UNet (ComfyUI's model patcher) takes from here: the order of the
UNet's attention layers the file's indices count in, the identity tokens (the file's image projection
run on the ArcFace embedding, and for FaceID Plus on the CLIP states of the aligned face), each
cross-attention layer's identity keys and values, and the FaceID LoRA under kohya names. The
projection is diffusers' own module (the one `identity_adapter.load_adapter` loads), so both paths
draw from the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ..errors import HeadshotError

# UNet2DConditionModel registers up_blocks before mid_block, and attn_processors follows registration
_GROUP_ORDER = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}


def attention_order(layers) -> list[str]:
    """Diffusers attention-layer names (…transformer_blocks.N.attn1/attn2) in `unet.attn_processors`
    order, the order a FaceID file's `ip_adapter.{i}` indices count in."""

    def key(name: str):
        group, *rest = name.split(".")
        return (_GROUP_ORDER[group], tuple(int(p) if p.isdigit() else p for p in rest))

    return sorted(layers, key=key)


@dataclass
class UnetLayout:
    """The two things `identity_adapter.check_fits` reads of a UNet, for a UNet that is not diffusers'."""

    layers: list[str]  # attention layers in attn_processors order
    cross_attention_dim: int

    @property
    def attn_processors(self) -> dict:
        return {f"{layer}.processor": None for layer in self.layers}

    @property
    def config(self):
        return SimpleNamespace(cross_attention_dim=self.cross_attention_dim)


def image_projection(image_proj: dict) -> torch.nn.Module:
    """The file's image projection as diffusers builds it (MLPProjModel, or ProjPlusModel for Plus)."""
    from diffusers.loaders.unet import UNet2DConditionLoadersMixin

    # the converter reads only its argument when low_cpu_mem_usage is off (no UNet needed)
    convert = UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers
    return convert(None, dict(image_proj), low_cpu_mem_usage=False).eval()  # type: ignore[arg-type]


@torch.no_grad()
def identity_tokens(
    image_proj: dict, embedding, clip_states: torch.Tensor | None = None, shortcut: bool = False
) -> torch.Tensor:
    """[2, tokens, width] float32: the tokens of no identity (a zero embedding, the blank CLIP input),
    then of `embedding`. FaceID Plus needs `clip_states`, [2, patches, clip width] of the blank input then
    the aligned face (CLIP vision's penultimate hidden states)."""
    projection: Any = image_projection(image_proj).float()  # diffusers' module, attributes set below
    ids = torch.as_tensor(np.asarray(embedding, np.float32).reshape(1, 1, -1))
    ids = torch.cat([torch.zeros_like(ids), ids])
    if hasattr(projection, "clip_embeds"):
        if clip_states is None:
            raise HeadshotError(
                "FaceID Plus reads the face with CLIP vision too: give it the CLIP image encoder", "adapter_missing"
            )
        width = projection.proj_in.in_features
        if clip_states.shape[-1] != width:
            raise HeadshotError(
                f"the CLIP vision model gives {clip_states.shape[-1]}-wide states but this FaceID Plus file takes "
                f"{width} (ViT-H-14 gives 1280): use the image encoder it was trained with",
                "adapter_mismatch",
            )
        projection.clip_embeds = clip_states.float().reshape(2, 1, *clip_states.shape[-2:])
        projection.shortcut = shortcut
    return projection(ids.to(next(projection.parameters()).dtype))


@torch.no_grad()
def cross_attention_kv(ip_adapter: dict, layout: UnetLayout, tokens: torch.Tensor) -> dict[str, tuple]:
    """{cross-attention layer: (keys, values)}, each [2, tokens, layer width]: the identity tokens through
    that layer's to_k_ip / to_v_ip, computed once since the tokens do not change while sampling."""
    out = {}
    for i, layer in enumerate(layout.layers):
        if layer.endswith("attn2"):
            k, v = ip_adapter[f"{i}.to_k_ip.weight"].float(), ip_adapter[f"{i}.to_v_ip.weight"].float()
            out[layer] = (tokens @ k.T, tokens @ v.T)
    return out


def lora_in_kohya_names(ip_adapter: dict, lora_layers: dict[str, str]) -> dict[str, torch.Tensor]:
    """The FaceID LoRA (`check_fits`' stem -> layer map) as a kohya LoRA state dict any host's LoRA
    loader maps: lora_unet_<layer with _>.lora_down/.lora_up/.alpha, alpha = rank (IP-Adapter's scale 1)."""
    out = {}
    for stem, layer in lora_layers.items():
        down, up = ip_adapter[f"{stem}.down.weight"], ip_adapter[f"{stem}.up.weight"]
        name = "lora_unet_" + layer.replace(".", "_")
        out[f"{name}.lora_down.weight"] = down
        out[f"{name}.lora_up.weight"] = up
        out[f"{name}.alpha"] = torch.tensor(float(down.shape[0]))
    return out
