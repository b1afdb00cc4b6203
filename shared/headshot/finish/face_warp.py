"""Moving a face between a photo and the aligned 512x512 square: similarity transforms, warps, feathered paste.

Transforms are complex numbers (z -> a z + b) over PIL's continuous pixel coordinates (pixel i
covers [i, i+1); landmark and template values are pixel indices: + 0.5).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image

#: the side of the aligned face every supported model works at
FACE_SIZE = 512

# Feathering of the pasted square, in aligned-face (512) pixels: nothing of the model's output is
# used within ERODE px of the crop's edge, then its weight rises smoothly over FEATHER px.
ERODE = 8
FEATHER = 48


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[complex, complex]:
    """(a, b) with dst = a * src + b for the two point pairs (rows of `src`, `dst`)."""
    s1, s2 = (complex(*p) for p in src)
    d1, d2 = (complex(*p) for p in dst)
    a = (d2 - d1) / (s2 - s1)
    return a, d1 - a * s1


def _crop_corners_in_image(a: complex, b: complex, size: int) -> np.ndarray:
    corners = np.array([0, size, size + size * 1j, size * 1j])
    return (corners - b) / a


def _affine_data(c: complex, d: complex, kx: float = 1.0, ky: float = 1.0) -> tuple[float, ...]:
    """PIL AFFINE data for input = (kx, ky) * (c * output + d), read as complex numbers."""
    return (kx * c.real, -kx * c.imag, kx * d.real, ky * c.imag, ky * c.real, ky * d.imag)


def align(img: Image.Image, a: complex, b: complex, size: int = FACE_SIZE) -> Image.Image:
    """The `size` square of `img` that `z -> a z + b` maps onto [0, size)^2.

    Parts outside the photo repeat its edge pixels; faces larger than the crop are first shrunk
    with an antialiasing filter (the affine warp itself samples without one).
    """
    corners = _crop_corners_in_image(a, b, size)
    x0, x1 = math.floor(corners.real.min()) - 2, math.ceil(corners.real.max()) + 2
    y0, y1 = math.floor(corners.imag.min()) - 2, math.ceil(corners.imag.max()) + 2
    cx0, cy0 = min(max(x0, 0), img.width), min(max(y0, 0), img.height)
    cx1, cy1 = max(min(x1, img.width), cx0), max(min(y1, img.height), cy0)
    if cx1 - cx0 < 1 or cy1 - cy0 < 1:
        raise ValueError("the face lies outside the photo")
    inside = np.asarray(img.crop((cx0, cy0, cx1, cy1)))
    pad = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1), (0, 0))
    region = Image.fromarray(np.pad(inside, pad, mode="edge") if any(p for ax in pad for p in ax) else inside)
    kx = ky = 1.0
    scale = abs(a)  # crop pixels per image pixel
    if scale < 1:
        w, h = region.size
        size_small = (max(1, round(w * scale)), max(1, round(h * scale)))
        region = region.resize(size_small, Image.Resampling.LANCZOS)
        kx, ky = size_small[0] / w, size_small[1] / h
    c = 1 / a
    d = -b / a - complex(x0, y0)
    return region.transform(
        (size, size), Image.Transform.AFFINE, _affine_data(c, d, kx, ky), resample=Image.Resampling.BICUBIC
    )


@lru_cache(maxsize=4)
def feather_mask(size: int = FACE_SIZE) -> np.ndarray:
    """Weights over the aligned square: 0 within the eroded border, then a smooth rise to 1."""
    k = size / FACE_SIZE
    centres = np.arange(size, dtype=np.float64) + 0.5
    edge = np.minimum(centres, size - centres)
    t = np.clip((edge - ERODE * k) / (FEATHER * k), 0.0, 1.0)
    ramp = t * t * (3 - 2 * t)
    mask = np.outer(ramp, ramp).astype(np.float32)
    mask.setflags(write=False)
    return mask


def paste(
    base: np.ndarray, restored: np.ndarray, a: complex, b: complex, strength: float
) -> tuple[int, int, int, int] | None:
    """Blend `restored` (the aligned square, float 0..255) into `base` (uint8, changed in place)
    where `z -> a z + b` maps base pixels into the square. Returns the box of pixels blended into."""
    size = restored.shape[0]
    height, width = base.shape[:2]
    corners = _crop_corners_in_image(a, b, size)
    x0 = max(math.floor(corners.real.min()) - 1, 0)
    y0 = max(math.floor(corners.imag.min()) - 1, 0)
    x1 = min(math.ceil(corners.real.max()) + 1, width)
    y1 = min(math.ceil(corners.imag.max()) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    planes = [Image.fromarray(np.ascontiguousarray(restored[..., ch]), "F") for ch in range(3)]
    mask = Image.fromarray(feather_mask(size), "F")
    k = 1.0
    scale = abs(a)  # square pixels per base pixel
    if scale > 1:  # the face is smaller in the photo than in the square: shrink with antialiasing first
        small = max(1, round(size / scale))
        k = small / size
        planes = [p.resize((small, small), Image.Resampling.LANCZOS) for p in planes]
        mask = mask.resize((small, small), Image.Resampling.BILINEAR)
    c = k * a
    d = k * (a * complex(x0, y0) + b)
    data = _affine_data(c, d)
    out_size = (x1 - x0, y1 - y0)
    warped = np.stack(
        [
            np.asarray(p.transform(out_size, Image.Transform.AFFINE, data, resample=Image.Resampling.BICUBIC))
            for p in planes
        ],
        axis=-1,
    )
    weight = np.asarray(mask.transform(out_size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR))
    weight = np.clip(weight, 0.0, 1.0) * np.float32(strength)
    weight[weight < 1e-4] = 0.0
    original = base[y0:y1, x0:x1]
    blended = original.astype(np.float32) + (np.clip(warped, 0, 255) - original) * weight[..., None]
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    changed = weight > 0
    original[changed] = blended[changed]
    if not changed.any():
        return None
    ys, xs = np.nonzero(changed)
    return (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
