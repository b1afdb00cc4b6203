"""The person's reference faces for evaluation: one dlib encoding per reference photo (face_recognition's
metric averages the distance over them) and, with buffalo_l present, one ArcFace embedding per photo.

A reference is a folder of photos, a prepared dataset, an .identity.json, or a LoRA with the identity
file `headshot train` wrote beside it. An identity file lists each training photo's embedding
("embeddings"), so its distances equal the photos'; an older one holds only their mean: distances are
then to that mean, and the report says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HeadshotError
from ..faces import FaceAnalyzer
from ..faces.framing import find_upright
from ..faces.subject import pick_subject
from ..finish.ranking import identity_file_of, load_identity
from ..photos import display_name, list_photos, read_photo
from .identity_source import recorded_backend


@dataclass
class ReferenceFaces:
    source: str  # the REF given, for the report
    kind: str  # "photos", "dataset", "identity file" or "LoRA"
    dlib_encodings: list[np.ndarray] = field(default_factory=list)
    arcface_embeddings: list[np.ndarray] = field(default_factory=list)
    per_photo: bool = True  # False: an identity file's mean embedding stands in for the photos
    photos: int = 0  # reference photos with a face
    triggers: list[str] = field(default_factory=list)  # the LoRA's or dataset's trigger word
    notes: list[str] = field(default_factory=list)  # what a reader of the numbers should know


def load_reference(ref: str | Path, dlib: FaceAnalyzer, arcface: FaceAnalyzer | None) -> ReferenceFaces:
    ref = Path(ref)
    if not ref.exists():
        raise HeadshotError(
            f"--reference {ref} not found; give a folder of the person's photos, a prepared dataset, "
            "an .identity.json or a LoRA with its identity file",
            "not_found",
        )
    if ref.is_file() and ref.suffix.lower() == ".json":
        return _from_identity_file(ref, ref, "identity file", dlib, arcface)
    if ref.is_file() and ref.suffix.lower() == ".safetensors":
        from ..train.lora_files import lora_subject

        reference = _from_identity_file(identity_file_of(ref), ref, "LoRA", dlib, arcface)
        trigger, _ = lora_subject(str(ref))
        reference.triggers = [trigger] if trigger else []
        return reference
    dataset = _prepared_dataset(ref)
    if dataset is not None:
        photos, trigger = dataset
        reference = _from_photos(photos, ref, "dataset", dlib, arcface)
        reference.triggers = [trigger] if trigger else []
        return reference
    return _from_photos([ref] if ref.is_file() else list_photos(ref), ref, "photos", dlib, arcface)


def _prepared_dataset(folder: Path) -> tuple[list[Path], str | None] | None:
    """(photos, trigger) when `folder` is a kohya-layout dataset, else None (a plain photo folder)."""
    from ..dataset import kohya
    from ..train.dataset import load_training_set

    if not folder.is_dir():
        return None
    root = folder / kohya.IMAGE_ROOT if (folder / kohya.IMAGE_ROOT).is_dir() else folder
    if not any(p.is_dir() and kohya.parse_subset_folder(p.name) for p in root.iterdir()):
        return None
    training_set = load_training_set(folder)
    return [image.path for image in training_set.images], training_set.trigger


def _from_photos(
    paths: list[Path], ref: Path, kind: str, dlib: FaceAnalyzer, arcface: FaceAnalyzer | None
) -> ReferenceFaces:
    reference = ReferenceFaces(str(ref), kind)
    for path in paths:
        try:
            image = read_photo(path).image
        except HeadshotError as exc:
            reference.notes.append(f"reference {display_name(path.name)} passed over: {exc}")
            continue
        encoding = _subject_embedding(image, dlib)
        if encoding is None:
            reference.notes.append(f"reference {display_name(path.name)} passed over: no face found")
            continue
        reference.dlib_encodings.append(encoding)
        if arcface is not None:
            embedding = _subject_embedding(image, arcface)
            if embedding is not None:
                reference.arcface_embeddings.append(embedding)
    if not reference.dlib_encodings:
        raise HeadshotError(
            f"no face found in the reference photos of {ref}; give clear photos of the person", "identity_no_faces"
        )
    reference.photos = len(reference.dlib_encodings)
    return reference


def _subject_embedding(image, analyzer: FaceAnalyzer) -> np.ndarray | None:
    """The embedding of the person's face in a reference photo (turned upright if it lies on its side)."""
    upright = find_upright(image.convert("RGB"), analyzer)
    subject, _ = pick_subject(upright.faces)
    return None if subject is None else upright.embed(subject)


def _from_identity_file(
    path: Path, ref: Path, kind: str, dlib: FaceAnalyzer, arcface: FaceAnalyzer | None
) -> ReferenceFaces:
    backend = recorded_backend(path)
    if backend == "insightface" and arcface is None:
        raise HeadshotError(
            f"{path.name} holds insightface embeddings, and no buffalo_l model files were found; put buffalo_l "
            "in --face-models, or give the person's photos or dataset as --reference",
            "identity_backend_mismatch",
        )
    analyzer = arcface if backend == "insightface" else dlib
    assert analyzer is not None  # insightface without an analyzer is refused above
    identity = load_identity(path, analyzer)  # its checks and messages (missing, damaged, other backend)
    per_photo = _photo_embeddings(path)
    embeddings = per_photo or [identity.embedding]
    reference = ReferenceFaces(str(ref), kind, per_photo=bool(per_photo), photos=len(embeddings))
    if backend == "insightface":
        reference.arcface_embeddings = embeddings
        reference.notes.append(
            f"{path.name} holds ArcFace embeddings only: face distance (dlib) needs the photos or the dataset"
        )
    else:
        reference.dlib_encodings = embeddings
    if not per_photo:
        reference.notes.append(
            f"{path.name} holds the mean embedding of the training photos, not each photo's: distances are to "
            "that mean (give the photos or the dataset for face_recognition's per-photo average)"
        )
    return reference


def _photo_embeddings(path: Path) -> list[np.ndarray]:
    """Each photo's embedding, where an identity file lists them ("embeddings"); else empty."""
    data = json.loads(path.read_text(encoding="utf-8"))  # load_identity has read it already
    rows = data.get("embeddings") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return []
    try:
        return [np.asarray(row, np.float32) for row in rows if len(row) == len(data["embedding"])]
    except TypeError:
        return []
