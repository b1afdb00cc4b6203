"""Poses that come from outside: keypoints JSON (ours or OpenPose's) and points found on a photo."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import HeadshotError
from .pose import N_KEYPOINTS, People, Point, _checked


@dataclass
class PhotoPose:
    """A pose read from a photo: its people (normalised to the photo) and the photo's size."""

    people: People
    size: tuple[int, int]


def people_from_json(text: str, width: int, height: int) -> People:
    """People from keypoints JSON: our normalised list (one person or several), or OpenPose's JSON.

    OpenPose's format is {"people": [{"pose_keypoints_2d": [x, y, c, ...54 numbers]}], "canvas_width": W,
    "canvas_height": H} in pixels (the canvas size defaults to width x height); ours is a list of people, each
    18 points [x, y] or [x, y, confidence] in 0..1, or null for a point not seen.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HeadshotError(
            f"The keypoints JSON does not parse ({exc}); paste a list of people or OpenPose's JSON.", "invalid_pose"
        ) from None
    if isinstance(data, dict):
        if not isinstance(data.get("people"), list):
            raise HeadshotError("The keypoints JSON object needs a 'people' list (OpenPose's format).", "invalid_pose")
        cw, ch = float(data.get("canvas_width") or width), float(data.get("canvas_height") or height)
        people = []
        for n, person in enumerate(data["people"]):
            flat = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
            if not isinstance(flat, list) or len(flat) != 3 * N_KEYPOINTS:
                raise HeadshotError(
                    f"Person {n}: pose_keypoints_2d must hold 54 numbers (18 points x, y, confidence).", "invalid_pose"
                )
            pixels = any(abs(v) > 1.5 for v in flat[0::3] + flat[1::3])
            sx, sy = (cw, ch) if pixels else (1.0, 1.0)
            people.append([[flat[i] / sx, flat[i + 1] / sy, flat[i + 2]] for i in range(0, 3 * N_KEYPOINTS, 3)])
        return _checked(people)
    if (
        isinstance(data, list)
        and len(data) == N_KEYPOINTS
        and all(p is None or (isinstance(p, list) and p and all(isinstance(v, (int, float)) for v in p)) for p in data)
    ):
        data = [data]  # one person
    return _checked(data)


def photo_pose_on_canvas(people: People, photo_size: tuple[int, int], width: int, height: int) -> People:
    """Points found on a photo (normalised to it), placed on a `width` x `height` canvas as if the
    photo were scaled to cover the canvas and centre-cropped: no stretching, the photo's framing
    kept. Points cropped away become None."""
    pw, ph = photo_size
    scale = max(width / pw, height / ph)
    ox, oy = (width - pw * scale) / 2, (height - ph * scale) / 2
    out = []
    for person in _checked(people):
        moved: list[Point] = []
        for p in person:
            if p is None:
                moved.append(None)
                continue
            x, y = (p[0] * pw * scale + ox) / width, (p[1] * ph * scale + oy) / height
            moved.append((x, y) if 0 <= x <= 1 and 0 <= y <= 1 else None)
        out.append(moved)
    return out
