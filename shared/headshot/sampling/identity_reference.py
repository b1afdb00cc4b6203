"""One reference photo -> the `IdentityAdapter` FaceID draws with (one-photo mode).

The photo is screened exactly as prepare screens a training photo (`dataset.photo_screen`), so it is
refused for the same reasons in the same words (no face, several faces, face too small, blurry). The
identity is the 512-d ArcFace embedding of insightface's buffalo_l recognizer (w600k_r50), the one
FaceID was trained on; FaceID Plus also reads the face aligned the same way at 224 px with CLIP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BackendUnavailable, HeadshotError
from ..faces.base import FaceAnalyzer
from .protocol import IdentityAdapter

CLIP_FACE_SIZE = 224  # insightface's norm_crop size in IP-Adapter's FaceID Plus recipe


def identity_from_photo(
    photo: str | Path,
    analyzer: FaceAnalyzer,
    adapter: str | Path,
    *,
    weight: float = 0.8,
    image_encoder: str | Path | None = None,
    prepare=None,
) -> IdentityAdapter:
    """The identity of the one person in `photo`; a photo prepare would reject is refused with its reason.

    `prepare` is a `PrepareSettings` (default: prepare's own defaults) for the screening thresholds.
    """
    from ..dataset.photo_screen import examine_photo
    from ..dataset.prepare_settings import PrepareSettings
    from ..faces.framing import find_upright
    from ..faces.subject import pick_subject
    from ..photos import read_photo

    if analyzer.name != "insightface" or not hasattr(analyzer, "align"):
        raise BackendUnavailable(
            f"one-photo mode needs the insightface face backend (FaceID was trained on its 512-d ArcFace "
            f"embedding; {analyzer.name} gives another kind): put the buffalo_l pack (det_10g.onnx, "
            "w600k_r50.onnx) in <models>/insightface/models/buffalo_l/ or name its folder with --face-models"
        )
    if not 0 <= weight <= 2:
        raise HeadshotError(f"--adapter-weight {weight}: use a value from 0 to 2 (0.6-1.0 is usual)", "bad_option")
    path = Path(photo)
    if not path.is_file():
        raise HeadshotError(f"reference photo {path} not found; give one photo of the person", "not_found")
    settings = prepare or PrepareSettings()
    screened = examine_photo(path, path.name, analyzer, settings)
    if screened.rejection is not None:
        code, message = screened.rejection
        raise HeadshotError(f"reference photo refused: {message}", code)
    upright = find_upright(read_photo(path).image, analyzer, settings.detect_side)
    subject, _ = pick_subject(upright.faces)
    if subject is None:  # screening found it a moment ago: the file changed in between
        raise HeadshotError(f"reference photo refused: {path.name}: no face found", "no_face")
    embedding = np.asarray(upright.embed(subject), np.float32)
    face = Image.fromarray(analyzer.align(np.asarray(upright.image.convert("RGB")), subject, CLIP_FACE_SIZE))
    return IdentityAdapter(
        adapter=str(adapter),
        embedding=embedding,
        face=face,
        weight=float(weight),
        image_encoder=str(image_encoder) if image_encoder else None,
    )
