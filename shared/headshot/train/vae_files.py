"""A separate VAE file in place of the checkpoint's own (kohya's --vae, A1111's models/VAE, ComfyUI's models/vae).

Many merged checkpoints ship without a VAE, or with one people replace (vae-ft-mse-840000 for SD1.5, the
fp16-fix for SDXL). The file is the original LDM layout, with or without the ``first_stage_model.`` prefix,
as .safetensors or .ckpt (read with weights_only); only its encoder, decoder and quant convs are read (a VAE
saved with its training loss also holds a discriminator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import HeadshotError
from ..families import Family
from ..families.checkpoint_file import read_checkpoint, tensor_shape

#: the VAE's parts in the LDM layout
_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


class _VaeView(Mapping):
    """A file's VAE tensors (those under `stored`) seen under a checkpoint's VAE prefix (`shown`), read lazily
    as a checkpoint's own are."""

    def __init__(self, tensors: Mapping, stored: str, shown: str):
        self._tensors, self._stored, self._shown = tensors, stored, shown
        self._keys = [
            shown + k[len(stored) :] for k in tensors if k.startswith(stored) and k[len(stored) :].startswith(_PARTS)
        ]

    def _inner(self, key: str) -> str:
        if not key.startswith(self._shown):
            raise KeyError(key)
        return self._stored + key[len(self._shown) :]

    def __getitem__(self, key: str):
        return self._tensors[self._inner(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.startswith(self._shown) and self._inner(key) in self._tensors

    def shape_of(self, key: str) -> tuple[int, ...]:
        return tensor_shape(self._tensors, self._inner(key))

    def tensors(self, keys, dtype=None, device=None):
        inner = [self._inner(k) for k in keys]
        read = getattr(self._tensors, "tensors", None)
        pairs = read(inner, dtype=dtype, device=device) if read else ((k, self._tensors[k]) for k in inner)
        yield from ((self._shown + k[len(self._stored) :], v) for k, v in pairs)


def existing_vae_file(path: str | Path) -> Path:
    """`path` as a file that exists, or the error that says what to give."""
    found = Path(path).expanduser()
    if not found.is_file():
        raise HeadshotError(
            f"--vae {path}: no such file; give a VAE .safetensors/.ckpt (the files in A1111's models/VAE or "
            "ComfyUI's models/vae).",
            "vae_not_found",
        )
    return found


def separate_vae(path: str | Path, family: Family, *, dtype, device) -> tuple[dict, Callable[[], Any]]:
    """(the VAE file's diffusers config, a function that builds the VAE from it): known before the weights load,
    as a checkpoint's own VAE is."""
    from .configs_from_shapes import infer_vae_config
    from .single_file_loading import build_vae

    weights = read_vae_file(path, family)
    keys = set(weights)

    def load():
        return build_vae(weights, keys, family, dtype=dtype, device=device, source=str(path))

    return infer_vae_config(weights, keys, family), load


def read_vae_file(path: str | Path, family: Family) -> Mapping:
    """The VAE file's tensors under `family`'s checkpoint VAE prefix (so the checkpoint's loader reads them)."""
    path = existing_vae_file(path)
    tensors, _ = read_checkpoint(path)
    prefix = family.checkpoint_vae_prefix
    # a VAE saved inside a checkpoint keeps its prefix; a bare one (vae-ft-mse-840000, sdxl_vae) has none
    stored = prefix if any(k.startswith(prefix + "encoder.") for k in tensors) else ""
    view = _VaeView(tensors, stored, prefix)
    keys = set(view)
    if prefix + "encoder.down.0.block.0.conv1.weight" not in keys or prefix + "decoder.conv_out.weight" not in keys:
        diffusers = any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in tensors)
        raise HeadshotError(
            f"--vae {path.name}: "
            + (
                "a VAE in diffusers' layout; give the original (LDM) file, as A1111 and ComfyUI use it"
                if diffusers
                else "not a VAE (no encoder.down / decoder.conv_out weights); give a VAE file"
            ),
            "not_a_vae",
        )
    latent_channels = tensor_shape(view, prefix + "decoder.conv_in.weight")[1]
    if latent_channels != 4:
        raise HeadshotError(
            f"--vae {path.name}: a VAE of {latent_channels}-channel latents (SD3's or Flux's); {family.title} "
            "needs a 4-channel one (SD1.5's or SDXL's)",
            "not_a_vae",
        )
    return view
