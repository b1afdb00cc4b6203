"""Ranking by likeness: score each image's face against the person, best first, faceless aside."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from ..errors import HeadshotError
from ..faces.framing import find_upright
from ..faces.subject import pick_subject
from ..photos import list_photos, read_photo


@dataclass
class Identity:
    embedding: np.ndarray
    backend: str
    source: str


@dataclass
class Likeness:
    faceless: bool
    distance: float | None
    score: float | None  # 1 = identical, 0.5 = at the same-person threshold, 0 = far away


def identity_file_of(lora: str | Path) -> Path:
    """Where `headshot train` saves a LoRA's identity reference: beside it, as <name>.identity.json."""
    return Path(lora).with_suffix(".identity.json")


def identity_beside(lora: str | Path, analyzer) -> Identity | None:
    """The identity reference saved beside `lora`, or None when it has none (pictures are then not scored)."""
    path = identity_file_of(lora)
    return load_identity(path, analyzer) if path.is_file() else None


def load_identity(path: str | Path, analyzer) -> Identity:
    """The reference `headshot train` saved beside the LoRA (<name>.identity.json)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        embedding = np.asarray(data["embedding"], np.float32)
    except FileNotFoundError:
        raise HeadshotError(
            f"identity file {path} not found; it is written beside the LoRA as <name>.identity.json, "
            "or pass --reference PHOTOS_DIR",
            "identity_missing",
        ) from None
    except (ValueError, KeyError, TypeError):
        raise HeadshotError(
            f"{path} is not an identity file (expected JSON with 'embedding' and 'backend')", "identity_unreadable"
        ) from None
    if data.get("backend") != analyzer.name:
        raise HeadshotError(
            f"{path.name} was made with the {data.get('backend')} face backend; rank with "
            f"--face-backend {data.get('backend')} (embeddings of different backends do not compare)",
            "identity_backend_mismatch",
        )
    return Identity(embedding, analyzer.name, str(path))


def identity_from_images(images: Iterable[Image.Image], analyzer, source: str, where: str | None = None) -> Identity:
    """Mean embedding of the person's face in each picture (pictures without a face are passed over).

    `source` is recorded in the Identity; `where` names the pictures in the error (default: `source`).
    """
    embeddings = []
    for image in images:
        upright = find_upright(image.convert("RGB"), analyzer)
        subject, _ = pick_subject(upright.faces)
        if subject is not None:
            embeddings.append(upright.embed(subject))
    if not embeddings:
        raise HeadshotError(f"no face found in {where or source}; give clear photos of the person", "identity_no_faces")
    return Identity(np.mean(np.stack(embeddings), axis=0), analyzer.name, source)


def identity_from_photos(folder: str | Path, analyzer) -> Identity:
    """Mean embedding of the faces in a folder of the person's photos (or in one photo)."""
    folder = Path(folder)
    if not folder.exists():
        raise HeadshotError(f"reference {folder} not found; give a folder of the person's photos", "not_found")
    return identity_from_images(_readable_photos(folder), analyzer, str(folder), f"the photos in {folder}")


def _readable_photos(folder: Path) -> Iterator[Image.Image]:
    for path in [folder] if folder.is_file() else list_photos(folder):
        try:
            yield read_photo(path).image
        except HeadshotError:
            continue


def likeness(image: Image.Image, analyzer, identity: Identity | None) -> Likeness:
    upright = find_upright(image.convert("RGB"), analyzer)
    subject, _ = pick_subject(upright.faces)
    if subject is None:
        return Likeness(True, None, None)
    if identity is None:
        return Likeness(False, None, None)
    distance = analyzer.distance(upright.embed(subject), identity.embedding)
    score = max(0.0, 1.0 - distance / (2 * analyzer.same_person_distance))
    return Likeness(False, round(distance, 4), round(score, 4))


def rank(entries: list[dict], top: int | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """(kept best first, dropped below the top K, faceless) from results entries with
    'identity_score' and 'faceless'. Entries without a score keep their order after scored ones."""
    faced = [e for e in entries if not e["faceless"]]
    faceless = [e for e in entries if e["faceless"]]
    faced.sort(key=lambda e: -(e["identity_score"] if e["identity_score"] is not None else -1.0))
    if top is not None:
        return faced[:top], faced[top:], faceless
    return faced, [], faceless


def score_pictures(pictures: list[Image.Image], analyzer, identity: Identity | None, progress=None) -> list[dict]:
    """One results entry per picture: index, identity_score, identity_distance, faceless."""
    entries = []
    for i, picture in enumerate(pictures):
        if progress:
            progress(i, len(pictures), f"scoring picture {i + 1}")
        result = likeness(picture, analyzer, identity)
        entries.append(
            {
                "index": i,
                "identity_score": result.score,
                "identity_distance": result.distance,
                "faceless": result.faceless,
            }
        )
    return entries


def describe_likeness(entry: dict) -> str:
    if entry["faceless"]:
        return "no face"
    if entry["identity_score"] is None:
        return "face found, not scored (no identity given)"
    return f"likeness {entry['identity_score']:.3f} (distance {entry['identity_distance']:.3f})"


@dataclass
class RankedPictures:
    """Entries of score_pictures, split as `rank` does."""

    kept: list[dict]
    below: list[dict]
    faceless: list[dict]

    def summary(self, identity_source: str | None, top: int | None) -> str:
        """The ranking in words: where the identity came from, then one line per picture (numbered from 1)."""
        lines = [f"identity: {identity_source or 'none given (faces are found, not scored)'}"]
        lines += [f"#{n} picture {e['index'] + 1}: {describe_likeness(e)}" for n, e in enumerate(self.kept, 1)]
        lines += [f"below top {top}: picture {e['index'] + 1}: {describe_likeness(e)}" for e in self.below]
        lines += [f"set aside: picture {e['index'] + 1}: no face" for e in self.faceless]
        return "\n".join(lines)


def rank_by_likeness(
    pictures: list[Image.Image], analyzer, identity: Identity | None, top: int | None = None, progress=None
) -> RankedPictures:
    """Score each picture against the person and rank them: the top K most alike, the rest, the faceless."""
    return RankedPictures(*rank(score_pictures(pictures, analyzer, identity, progress), top))
