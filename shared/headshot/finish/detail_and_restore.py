"""Finishing one picture after it exists: repaint its faces with the detailer, then restore them.

Which faces are repainted: the subject (finish.detailer.choose_faces, the rule of faces.subject),
or for a group photo of N people the N best-scored faces left to right, one identity LoRA each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..faces.base import FaceAnalyzer
from ..faces.subject import people_from_left
from ..sampling.protocol import LoraWeight, Sampler
from .detailer import DetailerSettings, choose_faces, detail_faces
from .ranking import Identity


@dataclass
class Finishing:
    """What to do to each picture after it exists."""

    analyzer: FaceAnalyzer
    identity: Identity | None = None
    detailer: DetailerSettings | None = None  # None: no detailing
    detail_prompt: tuple[str, str] = ("", "")
    detail_loras: list[LoraWeight] = field(default_factory=list)  # one LoRA per face for group photos
    sampler: Sampler | None = None
    restorer: object | None = None  # a loaded face-restoration model
    fidelity: float = 0.5
    group: bool = False  # assign detail_loras[i] to the i-th face from the left


def finish_image(image: Image.Image, finishing: Finishing, seed: int, progress=None) -> tuple[Image.Image, dict]:
    """Detail and restore one picture; returns it and what was done."""
    done: dict = {}
    if finishing.detailer is not None and finishing.sampler is not None:
        faces = finishing.analyzer.detect(np.asarray(image.convert("RGB")))
        if finishing.group:
            faces = people_from_left(faces, len(finishing.detail_loras))
            per_face = [[lora] for lora in finishing.detail_loras[: len(faces)]]
        else:
            faces = choose_faces(faces, "largest")  # the subject; bystanders are left as they are
            per_face = [finishing.detail_loras] * len(faces)
        image, detailed = detail_faces(
            image,
            faces,
            finishing.sampler,
            *finishing.detail_prompt,
            seed=seed,
            settings=finishing.detailer,
            loras_per_face=per_face,
            progress=progress,
        )
        done["detailed_faces"] = len(detailed)
    if finishing.restorer is not None:
        from .restore import restore_faces

        image, restored = restore_faces(image, finishing.restorer, finishing.analyzer, fidelity=finishing.fidelity)
        done["restored_faces"] = len(restored)
    return image, done
