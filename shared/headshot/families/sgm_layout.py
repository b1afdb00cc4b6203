"""The SGM (Stability generative-models / LDM) UNet layout, as seen from diffusers' module names.

Single-file SD checkpoints keep the UNet in this layout (``input_blocks.N``, ``middle_block.N``,
``output_blocks.N``), and sd-scripts names SDXL LoRA modules by it, because it trains SDXL on an
SGM-layout UNet. `sgm_unet_path` maps a diffusers UNet2DConditionModel module path to its SGM path,
reading the block layout from the UNet's config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import HeadshotError

# full-size SDXL base, assumed when no UNet config is given
_SDXL_BASE_LAYOUT = {
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


def _config_get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


class SgmLayout:
    """Where each diffusers UNet block sits in the SGM UNet, derived from the UNet's config."""

    def __init__(self, unet_config: Any = None):
        cfg = _SDXL_BASE_LAYOUT if unet_config is None else getattr(unet_config, "config", unet_config)
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
        return 1 + sum(self.layers[lower] + 1 for lower in range(level)) + j

    def output_index(self, level: int, j: int) -> int:
        return sum(self.up_layers[u] for u in range(level)) + j

    def to_sgm(self, name: str) -> str | None:
        if name in _TOP_TO_SGM:
            return _TOP_TO_SGM[name]
        for top, sgm in _TOP_TO_SGM.items():
            if name.startswith(top + "."):
                return sgm + name[len(top) :]

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


def sgm_unet_path(module: str, unet_config: Any = None) -> str | None:
    """The SGM path of a diffusers UNet module (None when it has no place there).

    With L the level, j the index inside it and n_l the level's ``layers_per_block``:
    ``down_blocks.L.{attentions|resnets}.j`` -> ``input_blocks.(1 + sum_{l<L}(n_l + 1) + j).{1|0}``,
    ``down_blocks.L.downsamplers.0`` -> ``input_blocks.(1 + sum_{l<=L}(n_l + 1) - 1).0`` (conv -> op),
    ``mid_block.attentions.0`` -> ``middle_block.1`` (resnets 0/1 -> middle_block.0/2),
    ``up_blocks.U.{attentions|resnets}.j`` -> ``output_blocks.(sum_{u<U}(m_u) + j).{1|0}`` with m_u
    the up level's layer count (its mirrored n + 1). Inside a transformer the names are unchanged;
    resnet members are renamed (conv1 -> in_layers.2, ...). ``unet_config`` (a UNet, its config, or a
    dict) gives the layout; without it the full-size SDXL base layout is assumed.
    """
    return SgmLayout(unet_config).to_sgm(module)
