"""ComfyUI's image types and PIL: IMAGE is float32 torch [B,H,W,C] in 0..1, MASK is [B,H,W].

torch is imported inside the functions: ComfyUI always has it, and this module must import
without it (the pack's loader imports every node module at start-up).
"""

from __future__ import annotations

import textwrap
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def pil_to_image_batch(images: Sequence[Image.Image]):
    """One IMAGE batch from PIL images of one size (RGB; alpha and modes are converted)."""
    import torch

    images = list(images)
    if not images:
        raise ValueError("no images to batch")
    sizes = {img.size for img in images}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)} cannot form one batch; use fit_batch()")
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    return torch.from_numpy(np.stack(arrays))


def image_batch_to_pils(batch) -> list[Image.Image]:
    """PIL RGB images from an IMAGE batch ([B,H,W,C], or one [H,W,C] image); extra channels dropped."""
    array = batch.detach().cpu().float().numpy() if hasattr(batch, "detach") else np.asarray(batch, np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"an IMAGE batch is [B,H,W,C]; got shape {tuple(array.shape)}")
    out = []
    for item in array:
        if item.shape[-1] == 1:
            item = np.repeat(item, 3, axis=-1)
        rgb = np.clip(item[..., :3] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out.append(Image.fromarray(rgb, "RGB"))
    return out


def pil_to_mask(image: Image.Image):
    """A MASK [1,H,W] (float32, 0..1) from a PIL image's luminance."""
    import torch

    return torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)[None]


def empty_batch(height: int = 64, width: int = 64):
    """An IMAGE batch holding no image (shape [0,H,W,3]): 'nothing here' for optional outputs."""
    import torch

    return torch.zeros((0, height, width, 3), dtype=torch.float32)


def no_images(height: int = 64, width: int = 64):
    """What an IMAGE output gives when it holds no picture.

    Inside ComfyUI: ExecutionBlocker(None), so the nodes it feeds are skipped silently (its own
    SaveImage and PreviewImage fail on an empty batch). Elsewhere: an empty [0,H,W,3] batch.
    """
    from . import host

    graph_utils = host.module("comfy_execution.graph_utils")
    if graph_utils is not None and hasattr(graph_utils, "ExecutionBlocker"):
        return graph_utils.ExecutionBlocker(None)
    return empty_batch(height, width)


def fit_batch(images: Iterable[Image.Image], max_side: int | None = None) -> list[Image.Image]:
    """Photos of different sizes on one canvas size (for an IMAGE batch), never stretched.

    Each is shrunk to fit `max_side` (when given), then centred on a black canvas as large as
    the largest width and height among them.
    """
    images = [img.convert("RGB") for img in images]
    if max_side:
        shrunk = []
        for img in images:
            scale = max_side / max(img.size)
            if scale < 1:
                img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
            shrunk.append(img)
        images = shrunk
    if not images:
        return []
    width, height = max(i.width for i in images), max(i.height for i in images)
    out = []
    for img in images:
        if img.size == (width, height):
            out.append(img)
            continue
        canvas = Image.new("RGB", (width, height))
        canvas.paste(img, ((width - img.width) // 2, (height - img.height) // 2))
        out.append(canvas)
    return out


def note_image(text: str, width: int = 512, height: int = 256) -> Image.Image:
    """A dark card with `text` on it: what an IMAGE output shows when there is nothing to show."""
    card = Image.new("RGB", (width, height), (32, 32, 36))
    draw = ImageDraw.Draw(card)
    try:
        font = ImageFont.load_default(size=18)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    lines = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width=max(10, width // 10)) or [""]
    draw.multiline_text((16, 16), "\n".join(lines), fill=(230, 230, 230), font=font, spacing=6)
    return card
