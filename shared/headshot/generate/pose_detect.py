"""Reading a body pose from a photo with controlnet_aux's OpenPose annotator (local files only)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import BackendUnavailable, HeadshotError
from .pose import N_KEYPOINTS, People, Point
from .pose_keypoints import PhotoPose

ANNOTATOR_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
_ANNOTATOR_HELP = (
    "Install it with pip install controlnet_aux, and put the OpenPose annotator weights in one local "
    "folder (--annotator-dir; in ComfyUI, models/annotators): body_pose_model.pth (required), plus "
    "hand_pose_model.pth and facenet.pth, which controlnet_aux's OpenposeDetector also loads. They are in "
    "the lllyasviel/Annotators repository on Hugging Face; ComfyUI's controlnet_aux nodes and A1111's "
    "ControlNet extension keep copies (…/ckpts/lllyasviel/Annotators, extensions/sd-webui-controlnet/"
    "annotator/downloads/openpose). Nothing is downloaded for you; or pick a preset pose instead."
)


def pose_from_image(
    image: Image.Image, annotator_path: str | Path | None = None, *, detector: Any = None, detect_resolution: int = 512
) -> People:
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
        raise HeadshotError(
            "The pose detector given has no body_estimation model; pass controlnet_aux's OpenposeDetector.",
            code="invalid_pose_detector",
        )
    rgb = image.convert("RGB")
    scale = detect_resolution / min(rgb.size)
    if scale < 1:  # the annotator works near 512 px; large photos only cost time
        rgb = rgb.resize(
            (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.LANCZOS
        )
    bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
    w, h = rgb.size
    no_grad: contextlib.AbstractContextManager[Any]
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
        person: list[Point] = []
        for j in range(N_KEYPOINTS):
            index = int(row[j])
            if index < 0 or index >= len(candidate):
                person.append(None)
            else:
                person.append((float(candidate[index][0]) / w, float(candidate[index][1]) / h))
        people.append(person)
    people.sort(key=lambda p: min((q[0] for q in p if q is not None), default=1.0))  # left to right
    return people


def photo_pose(image: Image.Image, annotator_path: str | Path | None, *, detector: Any = None) -> PhotoPose:
    """The pose of the people in `image` with the photo's size, ready for `picture_plan.plan_picture`."""
    people = pose_from_image(image, annotator_path, detector=detector)
    if not people:
        raise HeadshotError(
            "No person was found in the pose photo; use a photo where the body is visible, or a preset pose.",
            "no_pose_found",
        )
    return PhotoPose(people, image.size)


def _controlnet_aux_installed() -> bool:
    import importlib.util
    import sys

    if "controlnet_aux" in sys.modules:  # imported already (or blocked with None)
        return sys.modules["controlnet_aux"] is not None
    return importlib.util.find_spec("controlnet_aux") is not None


def check_pose_detector(annotator_path: str | Path | None, option: str = "--annotator-dir") -> Path:
    """The annotator folder, once controlnet_aux is importable and the folder holds the body model;
    raises BackendUnavailable saying what to install or where to put the files. Loads nothing, so
    callers check it before any model loads."""
    if not _controlnet_aux_installed():
        raise BackendUnavailable(
            f"Reading a pose from a photo needs controlnet_aux, which is not installed. {_ANNOTATOR_HELP}"
        )
    if annotator_path is None:
        raise BackendUnavailable(f"No annotator folder was given ({option}). {_ANNOTATOR_HELP}")
    folder = Path(annotator_path).expanduser()
    if not folder.is_dir():  # a non-folder would make controlnet_aux try the Hugging Face hub
        raise BackendUnavailable(f"The annotator folder {folder} ({option}) does not exist. {_ANNOTATOR_HELP}")
    if not (folder / ANNOTATOR_FILES[0]).is_file():
        raise BackendUnavailable(f"{folder} ({option}) has no {ANNOTATOR_FILES[0]}. {_ANNOTATOR_HELP}")
    return folder


def _load_detector(annotator_path: str | Path | None):
    folder = check_pose_detector(annotator_path)
    from controlnet_aux import OpenposeDetector

    try:
        return OpenposeDetector.from_pretrained(str(folder))
    except (OSError, RuntimeError) as e:  # a missing hand/face file, or a damaged one
        missing = [f for f in ANNOTATOR_FILES if not (folder / f).is_file()]
        hint = f" Missing: {', '.join(missing)}." if missing else ""
        raise BackendUnavailable(f"OpenposeDetector could not load from {folder} ({e}).{hint} {_ANNOTATOR_HELP}") from e
