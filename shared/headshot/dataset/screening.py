"""Quality screening: which faces are fit to train on, and why the others are not."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..faces.base import FaceAnalyzer


@dataclass
class ScreeningSettings:
    resolution: int = 512
    face_share: float = 1 / 3
    min_face_px: int | None = None  # default: the face may be enlarged at most 2x into the crop
    min_sharpness: float = 0.015
    # the brightest 5 % of a face below this (of 255) is a face in the dark: even the darkest skin in usable
    # light has highlights far above it (measured: 207-220 on the sample faces, 32 at 15 % of the light)
    min_face_highlights: float = 40.0
    max_face_clipped_share: float = 0.5  # more of the face than this pure white (>= 250): washed out
    duplicate_bits: int = 12  # of 256 bits of the difference hash

    @property
    def min_face(self) -> int:
        if self.min_face_px is not None:
            return self.min_face_px
        return max(48, round(self.resolution * self.face_share / 2))


def sharpness(face_crop: Image.Image) -> float:
    """High-frequency share of the face: variance of the Laplacian over the variance of the image.

    Dividing by the image's own variance makes the figure independent of contrast and exposure.
    """
    gray = np.asarray(face_crop.convert("L"), np.float32)
    lap = -4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
    return float(lap.var() / (gray.var() + 1e-6))


def face_sharpness(crop: Image.Image, face_width_source: float, settings: ScreeningSettings) -> float:
    """Sharpness of the face in a headshot crop, measured at the scale the trainer will see it.

    A face enlarged into the crop is measured at its own size, so a small-but-sharp face is not
    called blurry for having been enlarged (too small is its own reason).
    """
    face_px = settings.resolution * settings.face_share
    measure = int(max(32, min(face_px, face_width_source)))
    return sharpness(crop.resize((measure, measure), Image.Resampling.BILINEAR, box=_face_box(settings)))


def _face_box(settings: ScreeningSettings) -> tuple[float, float, float, float]:
    """The face's square in a headshot crop (frame_headshot centres it at face_share of the width)."""
    face_px = settings.resolution * settings.face_share
    lo, hi = (settings.resolution - face_px) / 2, (settings.resolution + face_px) / 2
    return (lo, lo, hi, hi)


def face_exposure(crop: Image.Image, settings: ScreeningSettings) -> tuple[float, float]:
    """(the face's 95th-percentile luma of 255, the share of it clipped white) in a headshot crop."""
    luma = np.asarray(crop.convert("L").crop(_face_box(settings)), np.float32)
    return float(np.percentile(luma, 95)), float(np.mean(luma >= 250))


def difference_hash(img: Image.Image, size: int = 16) -> np.ndarray:
    """A 256-bit perceptual hash: the same picture in another format or size hashes alike."""
    small = np.asarray(img.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR), np.int16)
    return (small[:, 1:] > small[:, :-1]).ravel()


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def identity_consensus(
    embeddings: dict[str, np.ndarray], analyzer: FaceAnalyzer, reference: list[np.ndarray] | None = None
) -> tuple[np.ndarray | None, dict[str, float]]:
    """The set's identity (mean embedding of the largest group that agrees) and each photo's distance.

    With `reference` embeddings (a photo the person pinned) those define the identity instead.
    Returns (None, {}) when no two photos agree, so nobody is rejected on a coin toss.
    """
    keys = list(embeddings)
    if reference:
        center = np.mean(np.stack(reference), axis=0)
    else:
        if len(keys) < 2:
            return None, {}
        threshold = analyzer.same_person_distance
        dist = np.array([[analyzer.distance(embeddings[a], embeddings[b]) for b in keys] for a in keys])
        agree = (dist < threshold).sum(axis=1) - 1  # neighbours, not counting itself
        best = int(np.lexsort((dist.mean(axis=1), -agree))[0])
        if agree[best] == 0:
            return None, {}
        group = [keys[j] for j in range(len(keys)) if dist[best, j] < threshold]
        center = np.mean(np.stack([embeddings[k] for k in group]), axis=0)
    return center, {k: analyzer.distance(embeddings[k], center) for k in keys}
