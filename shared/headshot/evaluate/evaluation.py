"""`headshot evaluate`: each picture's face distance to the person, ArcFace similarity, CLIP score and
faceless flag, the summary with its bands, written as evaluation.json and a contact sheet.

face_distance is face_recognition's metric: the L2 distance between the 128-d dlib encoding of the
picture's face and each reference photo's, averaged over the reference photos. Faces are detected once
per picture (no quarter turns: generated pictures are upright); CLIP runs in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..dataset.contact_sheet import contact_sheet
from ..errors import HeadshotError
from ..faces import FaceAnalyzer, cosine_distance
from ..faces.subject import pick_subject
from ..outputs import OutputManifest, atomic_save, atomic_write_json, check_writable
from ..photos import downscaled, read_photo
from .bands import summary_bands
from .clip_model import ClipScorer, clip_text
from .picture_inputs import PictureInput
from .reference_faces import ReferenceFaces

EVALUATION_NAME = "evaluation.json"
SHEET_NAME = "evaluation_sheet.jpg"
DETECT_SIDE = 1024  # pictures are measured at most this long (as ranking and prepare detect)
THUMB_SIDE = 184


@dataclass
class FaceMeasures:
    face_found: bool
    face_distance: float | None = None
    arcface_similarity: float | None = None


def measure_faces(
    image: Image.Image, reference: ReferenceFaces, dlib: FaceAnalyzer, arcface: FaceAnalyzer | None
) -> FaceMeasures:
    """Find the picture's face once (dlib) and compare it with every reference photo."""
    small, _ = downscaled(image.convert("RGB"), DETECT_SIDE)
    rgb = np.asarray(small)
    subject, _ = pick_subject(dlib.detect(rgb))
    if subject is None:
        return FaceMeasures(False)
    measures = FaceMeasures(True)
    if reference.dlib_encodings:
        encoding = dlib.embed(rgb, subject)
        distances = [dlib.distance(encoding, r) for r in reference.dlib_encodings]
        measures.face_distance = round(float(np.mean(distances)), 4)
    if arcface is not None and reference.arcface_embeddings:
        face, _ = pick_subject(arcface.detect(rgb))
        if face is not None:
            embedding = arcface.embed(rgb, face)
            similarities = [1.0 - cosine_distance(embedding, r) for r in reference.arcface_embeddings]
            measures.arcface_similarity = round(float(np.mean(similarities)), 4)
    return measures


@dataclass
class Evaluation:
    images: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    thumbs: list[Image.Image | None] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # what was compared with what, for the report

    def summary(self) -> dict:
        measured = [e for e in self.images if "reason" not in e]
        distances = [e["face_distance"] for e in measured if e["face_distance"] is not None]
        clips = [e["clip_score"] for e in measured if e["clip_score"] is not None]
        summary: dict[str, Any] = {
            "images": len(measured),
            "unreadable": len(self.images) - len(measured),
            "faces_found": sum(bool(e["face_found"]) for e in measured),
            "face_distance_mean": round(float(np.mean(distances)), 4) if distances else None,
            "clip_score_mean": round(float(np.mean(clips)), 4) if clips else None,
            "faceless_count": sum(bool(e["faceless"]) for e in measured),
        }
        if any("arcface_similarity" in e for e in measured):
            similarities = [e["arcface_similarity"] for e in measured if e.get("arcface_similarity") is not None]
            summary["arcface_similarity_mean"] = round(float(np.mean(similarities)), 4) if similarities else None
        summary["bands"] = summary_bands(summary)
        return summary

    def as_json(self) -> dict:
        return {"images": self.images, "summary": self.summary(), **self.details, "warnings": self.warnings}


def evaluate_pictures(
    pictures: list[PictureInput],
    reference: ReferenceFaces,
    dlib: FaceAnalyzer,
    arcface: FaceAnalyzer | None = None,
    clip: ClipScorer | None = None,
    prompt: str | None = None,
    progress=None,
    clip_batch: int = 16,
) -> Evaluation:
    """Measure every picture; one that cannot be read is listed with its reason and the run goes on.

    `prompt`, when given, is every picture's prompt; otherwise each picture's own (from results.json).
    """
    evaluation = Evaluation(warnings=list(reference.notes))
    pending: list[tuple[dict, Image.Image, str]] = []

    def score_pending() -> None:
        if clip is not None and pending:
            scores = clip.cosines([p[1] for p in pending], [p[2] for p in pending], clip_batch)
            for (entry, _, _), score in zip(pending, scores):
                entry["clip_score"] = round(score, 4)
        pending.clear()

    unprompted = 0
    for i, picture in enumerate(pictures):
        if progress:
            progress(i, len(pictures), f"measuring {picture.name}")
        try:
            image = read_photo(picture.path).image
        except HeadshotError as exc:
            evaluation.images.append(_unreadable(picture, exc))
            evaluation.thumbs.append(None)
            continue
        faces = measure_faces(image, reference, dlib, arcface)
        text = prompt if prompt is not None else picture.prompt
        text = clip_text(text, [*picture.triggers, *reference.triggers]) if text is not None else None
        entry = {
            "image": picture.name,
            "prompt": text,
            "face_found": faces.face_found,
            "face_distance": faces.face_distance,
            **({"arcface_similarity": faces.arcface_similarity} if arcface is not None else {}),
            "clip_score": None,
            "faceless": not faces.face_found
            or (faces.face_distance is not None and faces.face_distance >= dlib.same_person_distance),
        }
        evaluation.images.append(entry)
        evaluation.thumbs.append(_thumbnail(image))
        if clip is not None and text:
            pending.append((entry, image, text))
            if len(pending) >= clip_batch:
                score_pending()
        elif clip is not None:
            unprompted += 1
    score_pending()
    if progress:
        progress(len(pictures), len(pictures), "measured")
    if clip is not None and unprompted:
        evaluation.warnings.append(
            f"{unprompted} picture(s) have no prompt, so no CLIP score: give --prompt, or the results.json of generate"
        )
    evaluation.details = {
        "reference": {
            "source": reference.source,
            "kind": reference.kind,
            "photos": reference.photos,
            "per_photo": reference.per_photo,
        },
        "face_backend": "dlib" + (f" + {arcface.name}" if arcface is not None else ""),
        "faceless_distance": dlib.same_person_distance,
        "clip_model": str(clip.model_dir) if clip is not None else None,
    }
    return evaluation


def _unreadable(picture: PictureInput, exc: HeadshotError) -> dict:
    return {
        "image": picture.name,
        "reason": exc.code,
        "message": str(exc),
        "face_found": None,
        "face_distance": None,
        "clip_score": None,
        "faceless": None,
    }


def _thumbnail(image: Image.Image) -> Image.Image:
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return thumb


def tile_note(entry: dict) -> str:
    """A picture's numbers as the contact sheet shows them."""
    if "reason" in entry:
        return f"unreadable: {entry['message']}"
    parts = [
        "no face"
        if not entry["face_found"]
        else ("distance n/a" if entry["face_distance"] is None else f"distance {entry['face_distance']:.3f}")
    ]
    if entry.get("arcface_similarity") is not None:
        parts.append(f"arcface {entry['arcface_similarity']:.3f}")
    if entry["clip_score"] is not None:
        parts.append(f"CLIP {entry['clip_score']:.3f}")
    if entry["faceless"] and entry["face_found"]:
        parts.append("not the person")
    return " · ".join(parts)


def write_evaluation(out_dir: str | Path, evaluation: Evaluation) -> tuple[Path, Path]:
    """evaluation.json and the contact sheet in `out_dir`, each written atomically; a file of the
    user's with the same name is refused, never overwritten."""
    out = check_writable(out_dir, "--out")
    manifest = OutputManifest(out)
    json_path = manifest.claim(out / EVALUATION_NAME)
    sheet_path = manifest.claim(out / SHEET_NAME)
    manifest.save()
    tiles = [
        (thumb, Path(entry["image"]).name, entry["faceless"] is False, tile_note(entry))
        for thumb, entry in zip(evaluation.thumbs, evaluation.images)
    ]
    sheet = contact_sheet(tiles)
    atomic_save(sheet_path, lambda tmp: sheet.save(tmp, format="JPEG", quality=90))
    atomic_write_json(json_path, evaluation.as_json())  # last: when it changes, the sheet is in place
    return json_path, sheet_path
