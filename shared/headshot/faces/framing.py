"""Making faces upright and framing square headshot crops around them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from .base import Face, FaceAnalyzer

#: turns tried, in order, when no face is found as stored (photos without EXIF that are 90/180° off)
QUARTER_TURNS = (0, 90, 270, 180)


@dataclass
class UprightResult:
    image: Image.Image  # the photo turned so its faces are upright
    turned_degrees: int  # counter-clockwise turn applied (0, 90, 180, 270)
    faces: list[Face]  # in `image` coordinates
    analyzer: FaceAnalyzer | None = None
    detect_rgb: np.ndarray | None = None  # the downscaled, turned copy the faces were found in
    detect_factor: float = 1.0  # from detect_rgb coordinates to `image` coordinates

    def embed(self, face: Face) -> np.ndarray:
        """The identity embedding of one of `faces`, computed on the detection copy (no re-decode)."""
        # set whenever find_upright found faces, the only faces this is called with
        assert self.analyzer is not None and self.detect_rgb is not None
        face.embedding = self.analyzer.embed(self.detect_rgb, scaled_face(face, 1 / self.detect_factor))
        return face.embedding


def turned(img: Image.Image, degrees: int) -> Image.Image:
    ops = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    return img.transpose(ops[degrees]) if degrees else img


def scaled_face(face: Face, factor: float) -> Face:
    x0, y0, x1, y1 = face.box
    return Face(
        box=(x0 * factor, y0 * factor, x1 * factor, y1 * factor),
        score=face.score,
        eyes=face.eyes * factor,
        keypoints=face.keypoints * factor,
        embedding=face.embedding,
    )


def find_upright(
    img: Image.Image, analyzer: FaceAnalyzer, detect_side: int = 1024, screening: bool = False
) -> UprightResult:
    """Detect faces, turning the photo a quarter at a time until faces appear.

    Detection runs on a copy at most `detect_side` pixels long (12 MP photos would cost seconds
    each at full size); faces are returned in full-resolution coordinates, without embeddings
    (`UprightResult.embed` computes one for the face that matters). `screening` (prepare) lets a
    backend search more cheaply where its boxes may differ slightly from its plain search (dlib:
    detect_screening); measuring likeness keeps the plain search, the one face_recognition uses.
    """
    from ..photos import downscaled

    detect = getattr(analyzer, "detect_screening", analyzer.detect) if screening else analyzer.detect
    small, factor = downscaled(img, detect_side)
    for degrees in QUARTER_TURNS:
        rgb = np.asarray(turned(small, degrees))
        faces = detect(rgb)
        if faces:
            full = [scaled_face(f, factor) for f in faces]
            return UprightResult(turned(img, degrees), degrees, full, analyzer, rgb, factor)
    return UprightResult(img, 0, [])


@dataclass
class Framing:
    """Where a headshot crop came from, for the report and for later stages."""

    center: tuple[float, float]
    side: float  # square side in source pixels
    roll_degrees: float
    padded: bool  # part of the crop lay outside the photo and was filled


def frame_headshot(
    img: Image.Image, face: Face, resolution: int = 512, face_share: float = 1 / 3, level: bool = True
) -> tuple[Image.Image, Framing]:
    """A square `resolution` crop centred on `face`, the face `face_share` of its width.

    With `level`, the crop is turned about the face centre so the eyes lie level. Parts of the
    crop outside the photo are filled by mirroring the photo and blurring the mirror, which reads
    as out-of-focus background rather than a black border a LoRA would learn.
    """
    if not 0.05 <= face_share <= 0.9:
        raise ValueError(f"face_share {face_share} is out of range (0.05–0.9)")
    cx, cy = face.center
    side = face.width / face_share
    roll = face.roll_degrees if level else 0.0
    work_scale = crop_detail_scale(face.width, resolution, face_share)
    half = side / 2 * (abs(math.cos(math.radians(roll))) + abs(math.sin(math.radians(roll))))
    half_w = int(math.ceil(half * work_scale)) + 2  # room for the turn, in working pixels
    box = (cx - half_w / work_scale, cy - half_w / work_scale, cx + half_w / work_scale, cy + half_w / work_scale)
    inside = (max(0.0, box[0]), max(0.0, box[1]), min(float(img.width), box[2]), min(float(img.height), box[3]))
    if inside[2] - inside[0] < 1 or inside[3] - inside[1] < 1:
        raise ValueError("the face lies outside the photo")
    size_inside = (
        max(1, round((inside[2] - inside[0]) * work_scale)),
        max(1, round((inside[3] - inside[1]) * work_scale)),
    )
    part = np.asarray(img.resize(size_inside, Image.Resampling.LANCZOS, box=inside))
    pad = (
        (max(0, round((inside[1] - box[1]) * work_scale)), 0),
        (max(0, round((inside[0] - box[0]) * work_scale)), 0),
    )
    full = 2 * half_w
    pad = (
        (pad[0][0], max(0, full - pad[0][0] - part.shape[0])),
        (pad[1][0], max(0, full - pad[1][0] - part.shape[1])),
    )
    padded = any(v for axis in pad for v in axis)
    if padded:
        part = _fill_outside(part, pad)
    region = Image.fromarray(part[:full, :full])
    if abs(roll) > 0.5:
        region = region.rotate(roll, resample=Image.Resampling.BICUBIC, center=(full / 2, full / 2))
    keep = side * work_scale
    lo = full / 2 - keep / 2
    crop = region.resize((resolution, resolution), Image.Resampling.LANCZOS, box=(lo, lo, lo + keep, lo + keep))
    return crop, Framing((cx, cy), side, roll, padded)


def crop_detail_scale(face_width: float, resolution: int, face_share: float) -> float:
    """The fraction of a photo's resolution that frame_headshot uses for a face `face_width` px wide.

    A copy of the photo at this scale or larger gives the same crop, so the full-size decode is
    needed only where this is above what a reduced one holds.
    """
    # work at about 1.5x the output size: the final LANCZOS step then downsamples cleanly
    return min(1.0, 1.5 * resolution / (face_width / face_share))


def _fill_outside(part: np.ndarray, pad: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """Extend the photo's edge pixels outwards and blur them, blending in over a soft seam.

    Edge extension (not mirroring) keeps a second, ghost face from appearing in the border.
    """
    extended = np.pad(part, pad + ((0, 0),), mode="edge")
    radius = max(2.0, max(extended.shape[:2]) / 30)
    blurred = np.asarray(Image.fromarray(extended).filter(ImageFilter.GaussianBlur(radius)), np.float32)
    ramp = 1.5 * radius  # pixels over which the photo fades into the fill, measured from a filled side

    def along(length: int, before: int, after: int, inside: int) -> np.ndarray:
        pos = np.arange(length, dtype=np.float32) - before
        dist = np.full(length, np.inf, np.float32)
        if before:
            dist = np.minimum(dist, pos + 0.5)
        if after:
            dist = np.minimum(dist, inside - pos - 0.5)
        return np.clip(dist / ramp, 0.0, 1.0)

    wy = along(extended.shape[0], pad[0][0], pad[0][1], part.shape[0])
    wx = along(extended.shape[1], pad[1][0], pad[1][1], part.shape[1])
    weight = np.minimum(wy[:, None], wx[None, :])[..., None]
    out = weight * extended.astype(np.float32) + (1 - weight) * blurred
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
