"""Body poses for ControlNet OpenPose: the keypoint model, checking, mirroring and fitting a pose
to a canvas. The presets live in `pose_presets`, the skeleton image in `pose_render`, detection
in `pose_detect`.

Keypoints follow OpenPose's BODY_18 (COCO) order; "right" and "left" are the person's own, so on
a person facing the camera the right shoulder is on the image's left:

    0 nose, 1 neck, 2 r_shoulder, 3 r_elbow, 4 r_wrist, 5 l_shoulder, 6 l_elbow, 7 l_wrist,
    8 r_hip, 9 r_knee, 10 r_ankle, 11 l_hip, 12 l_knee, 13 l_ankle, 14 r_eye, 15 l_eye,
    16 r_ear, 17 l_ear

A person is a list of 18 points; a point is `(x, y)` in normalised image coordinates (0..1, the
origin at the top-left corner, x times the width and y times the height give pixels) or None
when that point is not seen. `(x, y, confidence)` is accepted too: confidence <= 0 means missing,
as in OpenPose's JSON. `people` is a list of persons.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..errors import HeadshotError

Point = tuple[float, float] | None
Person = list  # 18 Points
People = list  # of Person

KEYPOINT_NAMES = (
    "nose",
    "neck",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_eye",
    "l_eye",
    "r_ear",
    "l_ear",
)
(
    NOSE,
    NECK,
    R_SHOULDER,
    R_ELBOW,
    R_WRIST,
    L_SHOULDER,
    L_ELBOW,
    L_WRIST,
    R_HIP,
    R_KNEE,
    R_ANKLE,
    L_HIP,
    L_KNEE,
    L_ANKLE,
    R_EYE,
    L_EYE,
    R_EAR,
    L_EAR,
) = range(18)
N_KEYPOINTS = 18

HEAD_POINTS = (NOSE, R_EYE, L_EYE, R_EAR, L_EAR)

# left <-> right, for mirroring
_MIRROR = (
    NOSE,
    NECK,
    L_SHOULDER,
    L_ELBOW,
    L_WRIST,
    R_SHOULDER,
    R_ELBOW,
    R_WRIST,
    L_HIP,
    L_KNEE,
    L_ANKLE,
    R_HIP,
    R_KNEE,
    R_ANKLE,
    L_EYE,
    R_EYE,
    L_EAR,
    R_EAR,
)


def _mirrored(person: Sequence[Point]) -> list:
    return [None if (p := person[j]) is None else (round(1.0 - p[0], 4), p[1]) for j in _MIRROR]


def mirror_pose(people: People) -> People:
    """The pose seen in a mirror: x -> 1 - x, and every left point swapped with its right one."""
    return [_mirrored(person) for person in _checked(people)]


# --- checking and fitting -----------------------------------------------------------------------


def _point(p: Any, where: str) -> Point:
    if p is None:
        return None
    try:
        values = [float(v) for v in p]
    except (TypeError, ValueError):
        raise HeadshotError(
            f"{where} must be (x, y), (x, y, confidence) or None, not {p!r}.", code="invalid_pose"
        ) from None
    if len(values) not in (2, 3) or not all(math.isfinite(v) for v in values):
        raise HeadshotError(f"{where} must be (x, y), (x, y, confidence) or None, not {p!r}.", code="invalid_pose")
    if len(values) == 3 and values[2] <= 0:
        return None  # OpenPose JSON writes missing points with confidence 0
    return values[0], values[1]


def _checked(people: Any) -> list:
    """`people` as a list of 18-point lists of (x, y) or None; raises naming what is wrong."""
    if isinstance(people, str) or not isinstance(people, Sequence):
        raise HeadshotError(
            "A pose is a list of people, each a list of 18 points (or a name in "
            "POSE_PRESETS passed through preset_pose).",
            code="invalid_pose",
        )
    out = []
    for n, person in enumerate(people):
        if isinstance(person, str) or not isinstance(person, Sequence) or len(person) != N_KEYPOINTS:
            count = len(person) if isinstance(person, Sequence) else "no"
            raise HeadshotError(
                f"Person {n} of the pose has {count} points; OpenPose BODY_18 needs 18 "
                f"({', '.join(KEYPOINT_NAMES)}), with None for points not seen.",
                code="invalid_pose",
            )
        out.append([_point(p, f"Person {n}, point {j} ({KEYPOINT_NAMES[j]})") for j, p in enumerate(person)])
    return out


def _head_top(person: list) -> tuple[float, float] | None:
    """Where the top of the head roughly is: above the eyes by half the eye-to-neck distance
    (keypoints stop at the eyes and ears; the hair needs room above them)."""
    head = [person[j] for j in HEAD_POINTS if person[j] is not None]
    if not head:
        return None
    top = min(p[1] for p in head)
    eyes = [person[j] for j in (R_EYE, L_EYE) if person[j] is not None] or head
    eye_y = sum(p[1] for p in eyes) / len(eyes)
    if person[NECK] is not None and person[NECK][1] > eye_y:
        drop = 0.5 * (person[NECK][1] - eye_y)
    else:  # no neck: use the head's own width
        xs = [p[0] for p in head]
        drop = 0.6 * max(max(xs) - min(xs), 1e-3)
    return sum(p[0] for p in head) / len(head), top - drop


def head_extent(person: Sequence[Point]) -> tuple[float, float, float] | None:
    """(centre x, crown y, chin y) of one person's head, estimated from the face points: the crown
    as `_head_top` puts it, the chin as far below the eyes as the crown is above them (the eyes
    sit about halfway down the head). None when no face point is seen."""
    points = _checked([person])[0]
    top = _head_top(points)
    if top is None:
        return None
    eyes = [points[j] for j in (R_EYE, L_EYE) if points[j] is not None]
    eye_y = sum(p[1] for p in eyes) / len(eyes) if eyes else points[NOSE][1] if points[NOSE] else top[1]
    return top[0], top[1], eye_y + (eye_y - top[1])


def fit_pose(
    people: People,
    width: int,
    height: int,
    *,
    source_aspect: float = 1.0,
    frame: Sequence[int] | None = None,
    fill: float = 0.88,
    anchor: tuple[float, float] = (0.5, 0.5),
    include_head_top: bool = True,
    keep_inside: Sequence[int] = (),
    margin: float = 0.02,
    drop_outside: bool = True,
) -> People:
    """`people` (normalised for a canvas of aspect `source_aspect` = width/height) placed on a
    `width` x `height` canvas without stretching, returned normalised for that canvas.

    The box around the points listed in `frame` (default: all; with `include_head_top`, also an
    estimate of the top of each head) is scaled uniformly to fill at most `fill` of the canvas
    in both directions, and its centre goes to `anchor` (fractions of width and height). The
    figure is then made smaller if needed so the points listed in `keep_inside` stay `margin`
    inside the edges. Points that still land outside the canvas become None when `drop_outside`
    (a detector would not see them).
    Example: `fit_pose(people, w, h, frame=HEAD_POINTS, fill=0.4)` frames a close-up, the face
    (with the top of the head) filling 40 % of the canvas.
    """
    _check_size(width, height)
    if not (0 < fill <= 4):
        raise HeadshotError(f"fill must be a share of the canvas above 0 (got {fill}).", code="invalid_pose")
    people = _checked(people)
    frame = tuple(range(N_KEYPOINTS)) if frame is None else tuple(frame)
    # work in units of the source height, where x and y have the same scale
    pts = []
    for person in people:
        pts += [(person[j][0] * source_aspect, person[j][1]) for j in frame if person[j] is not None]
        top = _head_top(person) if include_head_top else None
        if top is not None:
            pts.append((top[0] * source_aspect, top[1]))
    if not pts:
        return [list(person) for person in people]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    box_w, box_h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    scale = min(fill * width / box_w, fill * height / box_h)  # pixels per source unit
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    for person in people:  # shrink until the points that must show are inside the margins
        for j in keep_inside:
            if person[j] is None:
                continue
            for d, a, size in (
                (person[j][0] * source_aspect - cx, anchor[0], width),
                (person[j][1] - cy, anchor[1], height),
            ):
                room = (1 - margin - a) if d > 0 else (a - margin)
                if abs(d) > 1e-9 and room > 0:
                    scale = min(scale, room * size / abs(d))
    out = []
    for person in people:
        moved: list[Point] = []
        for p in person:
            if p is None:
                moved.append(None)
                continue
            x = ((p[0] * source_aspect - cx) * scale) / width + anchor[0]
            y = ((p[1] - cy) * scale) / height + anchor[1]
            inside = 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0
            moved.append(None if drop_outside and not inside else (x, y))
        out.append(moved)
    return out


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise HeadshotError(
            f"The pose image size must be positive whole pixels (got {width} x {height}).", code="invalid_pose"
        )
