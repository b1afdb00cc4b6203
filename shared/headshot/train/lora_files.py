"""Kohya LoRA files on disk: writing (atomically, with sd-webui-additional-networks' hashes), reading,
and the AUTOMATIC1111 sidecar `<name>.json`.

The hashes follow sd-scripts' library/train_util.py (`precalculate_safetensors_hashes`,
`addnet_hash_safetensors`, `addnet_hash_legacy`, kohya-ss/sd-scripts at 48d368fa): both are taken over
a safetensors serialisation of the tensors with only the ss_* metadata, so that editing other
metadata later keeps them. The legacy hash reads 0x10000 bytes at offset 0x100000 of that
serialisation, exactly as A1111's `sd_models.model_hash` reads a file: when it is shorter than 1 MiB
the read is empty and the hash is SHA-256 of no bytes, e3b0c442 (so every LoRA under 1 MiB shares it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from headshot.errors import HeadshotError
from headshot.families import families
from headshot.outputs import atomic_save, atomic_write_text

LEGACY_HASH_OFFSET, LEGACY_HASH_LENGTH = 0x100000, 0x10000


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
    model_hash = hashlib.sha256(blob[8 + header_len :]).hexdigest()
    legacy_hash = hashlib.sha256(blob[LEGACY_HASH_OFFSET : LEGACY_HASH_OFFSET + LEGACY_HASH_LENGTH]).hexdigest()[:8]
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
        raise HeadshotError(f"no tensors to write to {path}; pass the LoRA state from peft_to_kohya.", "lora_bad_state")
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

    def write(tmp: Path) -> None:
        try:
            save_file(out, str(tmp), metadata=meta)
        except OSError:
            raise
        except Exception as exc:  # safetensors' own SafetensorError for an I/O failure
            raise HeadshotError(
                f"cannot write LoRA {path}: {exc}. Check free disk space and permissions.", "lora_write_failed"
            ) from exc

    atomic_save(path, write)


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
    version = _a1111_sd_version(str(sd_version))
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
    atomic_write_text(sidecar, json.dumps(data, indent=4, ensure_ascii=False) + "\n")
    return sidecar


def _a1111_sd_version(text: str) -> str:
    """A1111's "sd version" for a family name or an A1111 version ("sdxl" or "SDXL" -> "SDXL")."""
    for family in families():
        if text.lower() == family.name or text.upper() == family.a1111_sd_version.upper():
            return family.a1111_sd_version
    known = [f.a1111_sd_version for f in families()]
    raise HeadshotError(
        f"sd_version {text!r} is not one A1111 knows; use {', '.join(known[:-1])} or {known[-1]} "
        f"(or {'/'.join(f.name for f in families())}).",
        "lora_bad_metadata",
    )


def lora_subject(path: str) -> tuple[str | None, str | None]:
    """(trigger, class) recorded in a LoRA file by `headshot train` (or kohya's trigger phrase)."""
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
    except Exception:
        raise HeadshotError(f"{path} is not a readable .safetensors LoRA", "lora_unreadable") from None
    trigger, class_word = meta.get("headshot.trigger"), meta.get("headshot.class_word")
    if not trigger and meta.get("modelspec.trigger_phrase"):
        trigger, _, class_word = meta["modelspec.trigger_phrase"].partition(" ")
    return trigger or None, class_word or None
