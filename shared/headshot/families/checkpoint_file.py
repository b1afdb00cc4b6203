"""Single-file checkpoints read without running anything from them: .safetensors lazily (a tensor is
read when it is asked for, so detection costs a header and a few shapes), .ckpt with weights_only.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HeadshotError

if TYPE_CHECKING:
    import torch


class LazySafetensors(Mapping):
    """A .safetensors file as a read-only mapping that loads each tensor when it is asked for."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt", device="cpu")
        self._keys = list(self._file.keys())
        self._keyset = set(self._keys)
        self.metadata = dict(self._file.metadata() or {})

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keyset:
            raise KeyError(key)
        return self._file.get_tensor(key)

    def __contains__(self, key: object) -> bool:
        return key in self._keyset

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape_of(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())


def tensor_shape(state_dict: Mapping, key: str) -> tuple[int, ...]:
    shape_of = getattr(state_dict, "shape_of", None)
    return shape_of(key) if shape_of else tuple(state_dict[key].shape)


def read_checkpoint(path: Path) -> tuple[Mapping[str, torch.Tensor], dict]:
    """The tensors of a single file (lazily for safetensors) and its metadata; the format is read from the bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    header_length = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if head[8:9] == b"{" and 0 < header_length <= path.stat().st_size - 8:  # safetensors: u64 length, JSON header
        try:
            tensors = LazySafetensors(path)
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise HeadshotError(
                f"{path} is a damaged .safetensors file ({e}); download or copy it again.", "unreadable_checkpoint"
            ) from e
        return tensors, tensors.metadata
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch's zip format, or a legacy pickle
        return _torch_load(path), {}
    raise HeadshotError(
        f"{path} is neither a .safetensors file nor a torch .ckpt; pass a Stable Diffusion checkpoint or a "
        "diffusers folder.",
        "unreadable_checkpoint",
    )


class _Inert:
    """Stands in for a non-tensor object pickled in a .ckpt (a Lightning callback, a numpy scalar…).

    It accepts and drops whatever the unpickler gives it, so no code from the file ever runs.
    """

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .ckpt, loaded with weights_only=True (unwrapping a "state_dict" key)."""
    import torch

    def load(**extra):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True, **extra)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True, **extra)  # legacy format

    try:
        try:
            obj = load()
        except pickle.UnpicklingError:
            # Training checkpoints also pickle Python objects (callbacks, numpy scalars) beside the
            # weights. Those names are replaced by an inert stand-in and the load stays weights_only.
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            stubs: list = [(type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in names]
            with torch.serialization.safe_globals(stubs):
                obj = load()
    except Exception as e:
        raise HeadshotError(
            f"{path} could not be read as a torch checkpoint with weights_only=True ({e}). Convert it to "
            ".safetensors, or pass the model's diffusers folder instead.",
            "unreadable_checkpoint",
        ) from e
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise HeadshotError(
            f"{path} holds a {type(obj).__name__}, not a dictionary of weights; pass a Stable Diffusion checkpoint.",
            "not_a_base_model",
        )
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def key_indices(keys, prefix: str) -> list[int]:
    """The distinct integers that follow `prefix` in `keys` ("...blocks." -> [0, 1, 2])."""
    found = set()
    for key in keys:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def clip_text_prefix(keys, prefix: str) -> str | None:
    """The prefix of a transformers-layout CLIP text model under `prefix` (with or without "text_model.")."""
    for p in (prefix + "text_model.", prefix):
        if p + "embeddings.token_embedding.weight" in keys:
            return p
    return None
