"""Prior preservation: class images that keep the base model's idea of "a man" while it learns one man.

Class images come from the person (a folder) or are generated once by the base model and kept
in a cache keyed by model, prompt, size and seed, so a second job on the same model reuses them.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import torch

from ..errors import HeadshotError
from ..outputs import atomic_save
from .dataset import IMAGE_SUFFIXES, TrainingImage, check_images_readable


def default_cache_dir() -> Path:
    return Path(os.environ.get("HEADSHOT_CACHE", Path.home() / ".cache" / "headshot")) / "class_images"


def class_prompt(settings, class_word: str | None) -> str:
    return settings.class_prompt or f"a photo of a {class_word or 'person'}"


def _cache_key(settings, prompt: str) -> str:
    source = Path(settings.base_model)
    stamp = f"{source.resolve()}:{source.stat().st_mtime_ns}" if source.exists() else settings.base_model
    text = f"{stamp}|{prompt}|{settings.resolution}|{settings.seed}|{settings.validation_steps}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def class_images(settings, base, class_word: str | None, emit) -> list[TrainingImage]:
    """The class images to train with: the person's folder, or generated (and cached) ones."""
    prompt = class_prompt(settings, class_word)
    if settings.class_images_dir:
        folder = Path(settings.class_images_dir)
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not paths:
            raise HeadshotError(f"class image folder {folder} holds no images (png, jpg, webp)", "no_class_images")
        check_images_readable(paths, folder)
        return [TrainingImage(p, prompt, 1, "class") for p in paths]
    count = settings.class_image_count
    folder = default_cache_dir() / _cache_key(settings, prompt)
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("class-*.png"))
    if len(existing) < count:
        from .selection import build_pipeline

        emit(
            "status",
            message=f"generating {count - len(existing)} class images for prior preservation "
            f"('{prompt}'), cached in {folder}",
        )
        base.ensure_unet()  # generation needs it now; training would load it next anyway
        pipe = build_pipeline(base)
        for i in range(len(existing), count):
            with torch.no_grad():
                image = pipe(
                    prompt,
                    num_inference_steps=settings.validation_steps,
                    height=settings.resolution,
                    width=settings.resolution,
                    generator=torch.Generator().manual_seed(settings.seed + i),
                ).images[0]
            # a killed run leaves no half image in the cache; two jobs filling it never share a temporary file
            atomic_save(folder / f"class-{i:04d}.png", partial(image.save, format="PNG"))
            emit("status", message=f"class image {i + 1}/{count}")
        existing = sorted(folder.glob("class-*.png"))
    return [TrainingImage(p, prompt, 1, "class") for p in existing[:count]]
