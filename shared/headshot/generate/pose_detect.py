"""Reading a body pose from a photo with controlnet_aux's OpenPose annotator (local files only)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import BackendUnavailable, HeadshotError
from .pose import N_KEYPOINTS, People

ANNOTATOR_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
_ANNOTATOR_HELP = (
    "Pose detection needs controlnet_aux (pip install controlnet_aux) and the OpenPose annotator "
    "weights in one local folder: body_pose_model.pth (required), plus hand_pose_model.pth and "
    "facenet.pth, which controlnet_aux's OpenposeDetector also loads. They are in the "
    "lllyasviel/Annotators repository on Hugging Face; ComfyUI's controlnet_aux nodes and A1111's "
    "ControlNet extension keep copies (…/ckpts/lllyasviel/Annotators, extensions/sd-webui-controlnet/"
    "annotator/downloads/openpose). Nothing is downloaded for you; or pick a preset pose instead."
)


def pose_from_image(image: Image.Image, annotator_path: str | Path | None = None, *,
                    detector: Any = None, detect_resolution: int = 512) -> People:
    """The people in `image`, as normalised BODY_18 points (the shape `render_openpose` takes).

    Uses controlnet_aux's OpenposeDetector, loaded from the local folder `annotator_path` (see
    ANNOTATOR_FILES), or an already loaded `detector` (an OpenposeDetector, or anything with a
    `body_estimation(bgr_uint8_array) -> (candidate, subset)` attribute, the annotator's body
    model interface). Raises BackendUnavailable when neither is usable; never downloads.
    """
    if detector is None:
        detector = _load_detector(annotator_path)
    body = getattr(detector, "body_estimation", None)
    if body is None or not callable(body):
        raise HeadshotError("The pose detector given has no body_estimation model; pass controlnet_aux's "
                            "OpenposeDetector.", code="invalid_pose_detector")
    rgb = image.convert("RGB")
    scale = detect_resolution / min(rgb.size)
    if scale < 1:  # the annotator works near 512 px; large photos only cost time
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                         Image.Resampling.LANCZOS)
    bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
    w, h = rgb.size
    try:
        import torch

        no_grad = torch.no_grad()
    except ImportError:
        no_grad = contextlib.nullcontext()
    with no_grad:
        candidate, subset = body(bgr)
    candidate = np.asarray(candidate, dtype=np.float64).reshape(-1, 4) if np.size(candidate) else np.zeros((0, 4))
    subset = np.asarray(subset, dtype=np.float64)
    subset = subset.reshape(1, -1) if subset.ndim == 1 else subset
    people = []
    for row in subset:  # 18 candidate indices (-1: not found), then the score and the part count
        person = []
        for j in range(N_KEYPOINTS):
            index = int(row[j])
            if index < 0 or index >= len(candidate):
                person.append(None)
            else:
                person.append((float(candidate[index][0]) / w, float(candidate[index][1]) / h))
        people.append(person)
    people.sort(key=lambda p: min((q[0] for q in p if q is not None), default=1.0))  # left to right
    return people


def _load_detector(annotator_path: str | Path | None):
    try:
        from controlnet_aux import OpenposeDetector
    except ImportError:
        raise BackendUnavailable(f"controlnet_aux is not installed. {_ANNOTATOR_HELP}") from None
    if annotator_path is None:
        raise BackendUnavailable(f"No annotator folder was given. {_ANNOTATOR_HELP}")
    folder = Path(annotator_path).expanduser()
    if not folder.is_dir():  # a non-folder would make controlnet_aux try the Hugging Face hub
        raise BackendUnavailable(f"The annotator folder {folder} does not exist. {_ANNOTATOR_HELP}")
    if not (folder / ANNOTATOR_FILES[0]).is_file():
        raise BackendUnavailable(f"{folder} has no {ANNOTATOR_FILES[0]}. {_ANNOTATOR_HELP}")
    try:
        return OpenposeDetector.from_pretrained(str(folder))
    except (OSError, RuntimeError) as e:  # a missing hand/face file, or a damaged one
        missing = [f for f in ANNOTATOR_FILES if not (folder / f).is_file()]
        hint = f" Missing: {', '.join(missing)}." if missing else ""
        raise BackendUnavailable(f"OpenposeDetector could not load from {folder} ({e}).{hint} "
                                 f"{_ANNOTATOR_HELP}") from e
