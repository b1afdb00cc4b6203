"""Who the person is, for likeness: an identity file, the one saved beside a LoRA, photos, or a folder of photos.

The first source given is used. An identity file also says which face backend made it: under
"auto" that backend is used, since embeddings of different backends do not compare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from ..faces import FaceAnalyzer, face_backend_choices
from ..finish.ranking import Identity, identity_file_of, identity_from_images, identity_from_photos, load_identity

REFERENCE_IMAGES = "reference images"


@dataclass
class IdentitySource:
    """The ways a person can say who is pictured, in the order they are tried."""

    identity_file: Path | None = None
    lora_file: Path | None = None  # `headshot train` writes <name>.identity.json beside it
    reference_images: Sequence[Image.Image] | None = None
    reference_folder: Path | None = None


@dataclass
class ResolvedIdentity:
    analyzer: FaceAnalyzer
    identity: Identity | None  # None: no source given (faces are found, not scored)
    source: str | None  # where the identity came from, for reports


def recorded_backend(identity_file: str | Path) -> str | None:
    """The face backend an identity file names; None when unreadable (loading it then says why)."""
    try:
        data = json.loads(Path(identity_file).read_text())
    except (OSError, ValueError):
        return None
    backend = data.get("backend") if isinstance(data, dict) else None
    return backend if backend in face_backend_choices() else None


def resolve_identity(
    source: IdentitySource, face_backend: str, open_analyzer: Callable[[str], FaceAnalyzer]
) -> ResolvedIdentity:
    """The analyzer and the person's identity from the first source given.

    `open_analyzer(backend)` is the host's way to load a face analyzer (its folders, its cache).
    """
    path = source.identity_file or (identity_file_of(source.lora_file) if source.lora_file else None)
    if path is not None:
        backend = (recorded_backend(path) or face_backend) if face_backend == "auto" else face_backend
        analyzer = open_analyzer(backend)
        return ResolvedIdentity(analyzer, load_identity(path, analyzer), str(path))
    analyzer = open_analyzer(face_backend)
    if source.reference_images is not None:
        identity = identity_from_images(source.reference_images, analyzer, REFERENCE_IMAGES)
        return ResolvedIdentity(analyzer, identity, REFERENCE_IMAGES)
    if source.reference_folder is not None:
        identity = identity_from_photos(source.reference_folder, analyzer)
        return ResolvedIdentity(analyzer, identity, str(source.reference_folder))
    return ResolvedIdentity(analyzer, None, None)
