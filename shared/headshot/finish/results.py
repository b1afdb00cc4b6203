"""Finishing a batch of pictures and writing results.json: detail, restore, score, rank, sheet."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..dataset.contact_sheet import contact_sheet
from ..generate.sampler import LoraWeight, Sampler
from .detailer import DetailerSettings, detail_faces
from .ranking import Identity, likeness, rank

RESULTS_NAME = "results.json"
SHEET_NAME = "contact_sheet.jpg"
FACELESS_DIR = "faceless"
BELOW_TOP_DIR = "below_top"


@dataclass
class Finishing:
    """What to do to each picture after it exists."""

    analyzer: object
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
        faces = finishing.analyzer.detect(_rgb(image))
        if finishing.group:
            faces = sorted(faces, key=lambda f: f.center[0])[: len(finishing.detail_loras)]
            per_face = [[lora] for lora in finishing.detail_loras[: len(faces)]]
        else:
            faces = faces[:1]  # the subject; bystanders are left as they are
            per_face = [finishing.detail_loras] * len(faces)
        image, detailed = detail_faces(image, faces, finishing.sampler, *finishing.detail_prompt, seed=seed,
                                       settings=finishing.detailer, loras_per_face=per_face, progress=progress)
        done["detailed_faces"] = len(detailed)
    if finishing.restorer is not None:
        from .restore import restore_faces

        image, restored = restore_faces(image, finishing.restorer, finishing.analyzer, fidelity=finishing.fidelity)
        done["restored_faces"] = len(restored)
    return image, done


def _rgb(image: Image.Image):
    import numpy as np

    return np.asarray(image.convert("RGB"))


def score_and_write(out_dir: Path, entries: list[dict], images: dict[str, Image.Image], finishing: Finishing,
                    top: int | None) -> list[dict]:
    """Score every entry's image, rank, move faceless and below-top images aside, write results and sheet.

    `entries[i]["image"]` is the file name the image was saved under in `out_dir`.
    """
    for entry in entries:
        result = likeness(images[entry["image"]], finishing.analyzer, finishing.identity)
        entry.update(identity_score=result.score, identity_distance=result.distance, faceless=result.faceless)
    kept, below, faceless = rank(entries, top)
    for folder, group in ((FACELESS_DIR, faceless), (BELOW_TOP_DIR, below)):
        for entry in group:
            (out_dir / folder).mkdir(exist_ok=True)
            shutil.move(str(out_dir / entry["image"]), out_dir / folder / entry["image"])
            entry["image"] = f"{folder}/{entry['image']}"
    for number, entry in enumerate(kept, 1):
        entry["rank"] = number
    for entry in below + faceless:
        entry["rank"] = None
    ordered = kept + below + faceless
    (out_dir / RESULTS_NAME).write_text(json.dumps(ordered, indent=2) + "\n")
    sheet = contact_sheet([
        (images[Path(e["image"]).name], Path(e["image"]).name, e["rank"] is not None,
         "no face" if e["faceless"] else
         (f"#{e['rank']} " if e["rank"] else "below top ") +
         (f"likeness {e['identity_score']:.2f}" if e["identity_score"] is not None else "not scored"))
        for e in ordered
    ])
    sheet.save(out_dir / SHEET_NAME, quality=90)
    return ordered
