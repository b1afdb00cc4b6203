"""CLIP score: how well pictures match a prompt, with a local Hugging Face CLIP model folder."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from .clip_model import load_clip_scorer


def clip_scores(pictures: list[Image.Image], prompt: str, model_dir: str | Path) -> list[float]:
    """CLIPScore (100 x cosine of image and text embeddings, floored at 0) with a local CLIP model folder."""
    cosines = load_clip_scorer(model_dir).cosines(pictures, [prompt] * len(pictures))
    return [round(100.0 * max(0.0, c), 3) for c in cosines]
