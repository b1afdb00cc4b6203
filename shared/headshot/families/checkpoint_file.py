"""Single-file checkpoints read without running anything from them: .safetensors lazily (a tensor is
read when it is asked for, so detection costs a header and a few shapes), .ckpt with weights_only.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HeadshotError

if TYPE_CHECKING:
    import torch


# safetensors' dtype names -> torch dtypes (the ones a checkpoint can hold)
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


class LazySafetensors(Mapping):
    """A .safetensors file as a read-only mapping that reads each tensor from disk when it is asked for.

    safe_open checks the file and gives keys and metadata; tensors are then read with plain file
    reads into fresh memory, not through safe_open's memory map: the mapped pages a read touches
    count in the process's resident memory until the map is closed, which for a whole checkpoint
    is the file's size again on top of the converted models (measured: 1.8 GB of 2 GB for SD1.5).
    """

    def __init__(self, path: Path):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:  # validates the header
            self._keys = list(f.keys())
            self.metadata = dict(f.metadata() or {})
        self._path = path
        # kept open: a file replaced on disk before the deferred UNet is read still reads as the one checked
        self._handle = open(path, "rb", buffering=0)  # noqa: SIM115
        length = int.from_bytes(self._handle.read(8), "little")
        header = json.loads(self._handle.read(length))
        header.pop("__metadata__", None)
        self._data_start = 8 + length
        self._entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {
            k: (v["dtype"], tuple(v["shape"]), *v["data_offsets"]) for k, v in header.items()
        }

    def __getitem__(self, key: str) -> torch.Tensor:
        return dict(self.tensors([key]))[key]

    def tensors(self, keys, dtype: torch.dtype | None = None, device=None) -> Iterator[tuple[str, torch.Tensor]]:
        """(key, tensor) for `keys` in file order, floating ones cast to `dtype` on `device` as they are read.

        A tensor that needs a cast is read into one reused staging buffer, so converting a component
        costs its final size plus one tensor, and no fresh pages are faulted in twice.
        """
        import torch

        missing = [k for k in keys if k not in self._entries]
        if missing:
            raise KeyError(missing[0])
        order = sorted(keys, key=lambda k: self._entries[k][2])
        staging: torch.Tensor | None = None
        f = self._handle
        for key in order:
            dtype_name, shape, begin, end = self._entries[key]
            stored = getattr(torch, _SAFETENSORS_DTYPES.get(dtype_name, ""), None)
            if stored is None:  # a dtype this reader does not know: safetensors reads it, copied off its map
                yield key, self._via_safe_open(key, dtype, device)
                continue
            cast = dtype is not None and stored.is_floating_point and stored != dtype
            moved = device is not None and torch.device(device).type != "cpu"
            if cast or moved:
                if staging is None or staging.numel() < end - begin:
                    staging = torch.empty(end - begin, dtype=torch.uint8)
                raw = staging[: end - begin]
            else:
                raw = torch.empty(end - begin, dtype=torch.uint8)
            self._read_into(f, key, begin, raw)
            tensor = raw.view(stored).reshape(shape)
            if cast or moved:
                tensor = tensor.to(device=device, dtype=dtype if cast else stored, copy=True)
            yield key, tensor

    def _read_into(self, f, key: str, begin: int, raw: torch.Tensor) -> None:
        view, done = memoryview(raw.numpy().data), 0
        f.seek(self._data_start + begin)
        while done < len(view):  # one read returns at most ~2 GiB on Linux
            got = f.readinto(view[done:])
            if not got:
                raise OSError(f"{self._path} ends inside tensor {key}; download or copy it again.")
            done += got

    def _via_safe_open(self, key: str, dtype, device) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._path), framework="pt", device="cpu") as f:
            tensor = f.get_tensor(key).clone()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        return tensor if device is None else tensor.to(device)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape_of(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]


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
