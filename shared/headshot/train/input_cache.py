"""Cached training inputs on disk: image latents, text embeddings and the photos' face embeddings (the identity
reference checkpoints are judged against), keyed by what decides them.

Encoding the photos with the VAE and the captions with the text encoder takes most of a run's start-up
on a CPU or a small GPU; finding and embedding the faces much of the rest. A resumed job, a repeated run
and every run of a sweep read the same inputs, so the results are kept as safetensors files (never
pickles) named after a hash of the dataset's files, the base model's (or face backend's) identity and the
settings that shape them; a file whose key differs is simply not used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..outputs import atomic_write_bytes
from .dataset import TrainingImage

#: bump when the stored layout or what the tensors mean changes: older files stop matching
FORMAT = 1


def file_identity(path: Path) -> list:
    """Name, size and modification time: enough to notice another file, without reading gigabytes."""
    stat = path.stat()
    return [path.name, stat.st_size, stat.st_mtime_ns]


def fingerprint(*parts) -> str:
    """A stable hash of JSON-able values."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def base_model_identity(base_model: str | Path, vae: str | Path | None = None) -> list:
    """The base model's files (and a --vae file's, when one replaces its VAE)."""
    if vae:
        return base_model_identity(base_model) + [["vae", *file_identity(Path(vae).expanduser())]]
    model = Path(base_model).expanduser()
    if model.is_file():
        return file_identity(model)
    if model.is_dir():  # a diffusers folder: its weight files
        return sorted(file_identity(p) + [p.parent.name] for p in model.rglob("*") if p.is_file())
    return [str(base_model)]  # a hub id


def images_digest(images: list[TrainingImage]) -> str:
    """The photos' bytes and captions (crops are small: hashing them costs milliseconds)."""
    digest = hashlib.sha256()
    for item in images:
        digest.update(f"{item.subset}/{item.path.name}\0{item.caption}\0".encode())
        digest.update(hashlib.sha256(item.path.read_bytes()).digest())
    return digest.hexdigest()


class InputCache:
    """A folder of cached inputs; `folder=None` turns caching off."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None

    def key(self, kind: str, *parts) -> str:
        return f"{kind}-{fingerprint(FORMAT, kind, *parts)[:24]}"

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.safetensors"

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The tensors and layout stored under `key`, or None when absent or unreadable (then it is recomputed)."""
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError, safe_open

        try:  # one open: the layout is in the header, the tensors after it
            with safe_open(str(path), framework="pt") as f:
                layout = json.loads((f.metadata() or {}).get("layout", "null"))
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (OSError, ValueError, SafetensorError):
            return None  # a torn or foreign file: computing again is always safe
        if not isinstance(layout, dict):
            return None
        return tensors, layout

    def load_unpacked(self, key: str, unpack, images: int):
        """What is stored under `key`, unpacked for `images` images, or None (then it is computed)."""
        stored = self.load(key)
        return None if stored is None else unpack(*stored, images)

    def save(self, key: str, tensors: dict[str, torch.Tensor], layout: dict) -> None:
        path = self._path(key)
        if path is None:
            return
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"layout": json.dumps(layout)})
        atomic_write_bytes(path, data)


def latents_to_tensors(cache: list[list[torch.Tensor]]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {f"latent.{i}.{j}": latent for i, latents in enumerate(cache) for j, latent in enumerate(latents)}
    return tensors, {"counts": [len(latents) for latents in cache]}


def latents_from_tensors(
    tensors: dict[str, torch.Tensor], layout: dict, images: int
) -> list[list[torch.Tensor]] | None:
    counts = layout.get("counts")
    if not isinstance(counts, list) or len(counts) != images:
        return None
    try:
        return [[tensors[f"latent.{i}.{j}"] for j in range(count)] for i, count in enumerate(counts)]
    except KeyError:
        return None


def text_to_tensors(cache: list[list]) -> tuple[dict[str, torch.Tensor], dict]:
    """Per image, its caption variants' embeddings (TextEmbedding); each distinct embedding is stored once."""
    tensors: dict[str, torch.Tensor] = {}
    index: dict[int, int] = {}  # id of an embedding object -> its number on disk (the memo shares objects)
    per_image = []
    for embeddings in cache:
        numbers = []
        for embedding in embeddings:
            if id(embedding) not in index:
                k = index[id(embedding)] = len(index)
                tensors[f"text.{k}.hidden"] = embedding.hidden
                if embedding.pooled is not None:
                    tensors[f"text.{k}.pooled"] = embedding.pooled
            numbers.append(index[id(embedding)])
        per_image.append(numbers)
    return tensors, {"texts": per_image}


def text_from_tensors(tensors: dict[str, torch.Tensor], layout: dict, images: int) -> list[list] | None:
    from .caching import TextEmbedding

    per_image = layout.get("texts")
    if not isinstance(per_image, list) or len(per_image) != images:
        return None
    embeddings: dict[int, TextEmbedding] = {}
    try:
        for numbers in per_image:
            for k in numbers:
                if k not in embeddings:
                    embeddings[k] = TextEmbedding(tensors[f"text.{k}.hidden"], tensors.get(f"text.{k}.pooled"))
        return [[embeddings[k] for k in numbers] for numbers in per_image]
    except (KeyError, TypeError):
        return None
