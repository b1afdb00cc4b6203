"""The one face-analysis interface every backend implements."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    `eyes` is a (2, 2) array: the eye on the image's left first, then the one on its right
    (for an upright face that is the person's right eye, then their left).
    `keypoints` holds whatever landmarks the backend has (SCRFD: 5 points; dlib: 5 points).
    """

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    eyes: np.ndarray
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    embedding: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def roll_degrees(self) -> float:
        """Angle of the eye line against the horizontal; positive when the right-hand eye is lower."""
        (lx, ly), (rx, ry) = self.eyes
        return math.degrees(math.atan2(ry - ly, rx - lx))


@runtime_checkable
class FaceAnalyzer(Protocol):
    """Detects faces, embeds identities and (where a model allows) guesses the class word."""

    name: str
    #: identity distance under which two embeddings are taken as the same person
    same_person_distance: float

    @property
    def model_files(self) -> tuple[Path, ...]:
        """The model files that decide what it finds and embeds (face embeddings cached on disk are keyed by them)."""

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB array, largest first, without embeddings."""

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The identity embedding of `face` (found in `rgb`)."""

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Identity distance between two embeddings of this backend (0 = identical)."""

    def estimate_class(self, rgb: np.ndarray, face: Face) -> str | None:
        """'man' / 'woman' (or None when this backend has no such model)."""


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
