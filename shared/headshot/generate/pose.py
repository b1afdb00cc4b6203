"""Body poses for ControlNet OpenPose: presets as data, the skeleton image, and detection.

Keypoints follow OpenPose's BODY_18 (COCO) order; "right" and "left" are the person's own, so on
a person facing the camera the right shoulder is on the image's left:

    0 nose, 1 neck, 2 r_shoulder, 3 r_elbow, 4 r_wrist, 5 l_shoulder, 6 l_elbow, 7 l_wrist,
    8 r_hip, 9 r_knee, 10 r_ankle, 11 l_hip, 12 l_knee, 13 l_ankle, 14 r_eye, 15 l_eye,
    16 r_ear, 17 l_ear

A person is a list of 18 points; a point is `(x, y)` in normalised image coordinates (0..1, the
origin at the top-left corner, x times the width and y times the height give pixels) or None
when that point is not seen. `(x, y, confidence)` is accepted too: confidence <= 0 means missing,
as in OpenPose's JSON. `people` is a list of persons.

The presets are drawn for a SQUARE canvas (x and y share one unit, so bodies keep their
proportions). For any other size, `preset_pose(name, width, height)` (or `fit_pose`) places the
figure on that canvas without stretching it; `render_openpose` itself draws points where they
say, at any size.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from PIL import Image, ImageDraw

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

#: The 17 limbs in the order the OpenPose ControlNet annotator draws them; limb i gets COLORS[i].
LIMBS = (
    (NECK, R_SHOULDER),
    (NECK, L_SHOULDER),
    (R_SHOULDER, R_ELBOW),
    (R_ELBOW, R_WRIST),
    (L_SHOULDER, L_ELBOW),
    (L_ELBOW, L_WRIST),
    (NECK, R_HIP),
    (R_HIP, R_KNEE),
    (R_KNEE, R_ANKLE),
    (NECK, L_HIP),
    (L_HIP, L_KNEE),
    (L_KNEE, L_ANKLE),
    (NECK, NOSE),
    (NOSE, R_EYE),
    (R_EYE, R_EAR),
    (NOSE, L_EYE),
    (L_EYE, L_EAR),
)

#: The 18-colour palette (RGB): limb i and keypoint j use COLORS[i] and COLORS[j].
COLORS = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)

LIMB_SHADE = 0.6  # limbs are drawn opaque in int(colour * 0.6), keypoints in the full colour
KEYPOINT_RADIUS = 4

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


# --- presets ------------------------------------------------------------------------------------
# Proportions (square canvas, one unit = its side): shoulders about 2.4 ear-widths apart, eyes
# about 0.42 of the ear distance apart, upper arm and forearm 2 and 1.7 head-heights.

_N = None

#: Head and shoulders, facing the camera; arms and body below the frame.
_HEADSHOT_FRONT = [
    (0.500, 0.405),
    (0.500, 0.635),
    (0.260, 0.660),
    _N,
    _N,
    (0.740, 0.660),
    _N,
    _N,
    _N,
    _N,
    _N,
    _N,
    _N,
    _N,
    (0.458, 0.340),
    (0.542, 0.340),
    (0.400, 0.365),
    (0.600, 0.365),
]

#: Head turned about 35 degrees toward the image's LEFT (the subject's own right): the right ear
#: hides behind the head, the nose and eyes shift left, the shoulders turn a little with the head.
_HEADSHOT_THREE_QUARTER_LEFT = [
    (0.452, 0.405),
    (0.505, 0.635),
    (0.290, 0.660),
    _N,
    _N,
    (0.725, 0.650),
    _N,
    _N,
    _N,
    _N,
    _N,
    _N,
    _N,
    _N,
    (0.420, 0.340),
    (0.505, 0.338),
    _N,
    (0.590, 0.362),
]

#: Head to hips, arms relaxed with the hands in front of the hips.
_HALF_BODY_FRONT = [
    (0.500, 0.195),
    (0.500, 0.330),
    (0.370, 0.345),
    (0.340, 0.560),
    (0.360, 0.730),
    (0.630, 0.345),
    (0.660, 0.560),
    (0.640, 0.730),
    (0.425, 0.720),
    _N,
    _N,
    (0.575, 0.720),
    _N,
    _N,
    (0.483, 0.165),
    (0.517, 0.165),
    (0.458, 0.178),
    (0.542, 0.178),
]

#: Head to hips, forearms folded across the chest (each hand near the other arm's elbow).
_ARMS_CROSSED = [
    (0.500, 0.195),
    (0.500, 0.330),
    (0.365, 0.345),
    (0.350, 0.550),
    (0.560, 0.520),
    (0.635, 0.345),
    (0.650, 0.550),
    (0.440, 0.535),
    (0.425, 0.720),
    _N,
    _N,
    (0.575, 0.720),
    _N,
    _N,
    (0.483, 0.165),
    (0.517, 0.165),
    (0.458, 0.178),
    (0.542, 0.178),
]

#: Whole figure, weight even, arms hanging a little away from the body.
_STANDING_FULL_BODY = [
    (0.500, 0.130),
    (0.500, 0.245),
    (0.400, 0.255),
    (0.385, 0.410),
    (0.390, 0.545),
    (0.600, 0.255),
    (0.615, 0.410),
    (0.610, 0.545),
    (0.450, 0.515),
    (0.455, 0.745),
    (0.460, 0.955),
    (0.550, 0.515),
    (0.545, 0.745),
    (0.540, 0.955),
    (0.483, 0.110),
    (0.517, 0.110),
    (0.4615, 0.120),
    (0.5385, 0.120),
]


def _placed(person: Sequence[Point], scale: float, center_x: float, dy: float = 0.0) -> list:
    """`person` scaled about the canvas centre, its centre moved to `center_x`, then moved by dy."""
    return [
        None if p is None else (round((p[0] - 0.5) * scale + center_x, 4), round((p[1] - 0.5) * scale + 0.5 + dy, 4))
        for p in person
    ]


def _mirrored(person: Sequence[Point]) -> list:
    return [None if (p := person[j]) is None else (round(1.0 - p[0], 4), p[1]) for j in _MIRROR]


def mirror_pose(people: People) -> People:
    """The pose seen in a mirror: x -> 1 - x, and every left point swapped with its right one."""
    return [_mirrored(person) for person in _checked(people)]


POSE_PRESETS: dict = {
    "headshot_front": [_HEADSHOT_FRONT],
    "headshot_three_quarter_left": [_HEADSHOT_THREE_QUARTER_LEFT],
    # the turn toward the image's right is the mirror image of the turn toward its left
    "headshot_three_quarter_right": [_mirrored(_HEADSHOT_THREE_QUARTER_LEFT)],
    "half_body_front": [_HALF_BODY_FRONT],
    "arms_crossed": [_ARMS_CROSSED],
    "standing_full_body": [_STANDING_FULL_BODY],
    "two_people_side_by_side": [
        _placed(_HALF_BODY_FRONT, 0.75, 0.29, 0.05),
        _placed(_HALF_BODY_FRONT, 0.72, 0.71, 0.07),
    ],
    "three_people_group": [
        _placed(_HALF_BODY_FRONT, 0.60, 0.20, 0.08),
        _placed(_HALF_BODY_FRONT, 0.64, 0.50, 0.05),
        _placed(_HALF_BODY_FRONT, 0.60, 0.80, 0.08),
    ],
}

# How `preset_pose` frames each preset: (points whose box is framed (None: all), share of the
# canvas that box may fill, where the box centre goes, points that must stay inside). Headshots
# frame the head and neck (plus the estimated top of the head) at about 60 % of the height, a
# little above the middle, so the result has a tenth of headroom and the shoulders near the
# bottom; on narrow canvases the shoulders decide, the figure shrinking until they are inside.
_HEAD_AND_NECK = HEAD_POINTS + (NECK,)
_HEADSHOT_FRAMING = (_HEAD_AND_NECK, 0.62, (0.5, 0.40), (R_SHOULDER, L_SHOULDER))
_FRAMING = {
    "headshot_front": _HEADSHOT_FRAMING,
    "headshot_three_quarter_left": _HEADSHOT_FRAMING,
    "headshot_three_quarter_right": _HEADSHOT_FRAMING,
}
_DEFAULT_FRAMING = (None, 0.88, (0.5, 0.5), ())


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


def preset_pose(name: str, width: int, height: int) -> People:
    """The preset `name` fitted to a `width` x `height` canvas (see `fit_pose`), ready for
    `render_openpose(preset_pose(name, w, h), w, h)`."""
    if name not in POSE_PRESETS:
        import difflib

        close = difflib.get_close_matches(name, list(POSE_PRESETS), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise HeadshotError(
            f"Unknown pose preset {name!r}.{hint} Presets: {', '.join(POSE_PRESETS)}.", code="unknown_pose"
        )
    frame, fill, anchor, keep_inside = _FRAMING.get(name, _DEFAULT_FRAMING)
    return fit_pose(POSE_PRESETS[name], width, height, frame=frame, fill=fill, anchor=anchor, keep_inside=keep_inside)


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise HeadshotError(
            f"The pose image size must be positive whole pixels (got {width} x {height}).", code="invalid_pose"
        )


# --- the skeleton image -------------------------------------------------------------------------


# a filled circle of radius 4 as OpenCV rasterises it: the pixels within the radius of the centre
_DISC = [
    (dx, dy)
    for dx in range(-KEYPOINT_RADIUS, KEYPOINT_RADIUS + 1)
    for dy in range(-KEYPOINT_RADIUS, KEYPOINT_RADIUS + 1)
    if dx * dx + dy * dy <= KEYPOINT_RADIUS**2
]


def _limb_polygon(a: tuple[float, float], b: tuple[float, float], stick_width: int) -> list[tuple[int, int]]:
    """The annotator's limb: an ellipse around segment a-b as OpenCV's ellipse2Poly makes it (centre,
    half-length and angle cut to whole numbers; semi-minor axis `stick_width`; one point a degree)."""
    cx, cy = int((a[0] + b[0]) / 2), int((a[1] + b[1]) / 2)
    half_len = int(math.hypot(b[0] - a[0], b[1] - a[1]) / 2)
    angle = math.radians(int(math.degrees(math.atan2(a[1] - b[1], a[0] - b[0]))))
    ca, sa = math.cos(angle), math.sin(angle)
    out: list[tuple[int, int]] = []
    for deg in range(0, 361):
        t = math.radians(deg)
        u, v = half_len * math.cos(t), stick_width * math.sin(t)
        point = (round(cx + u * ca - v * sa), round(cy + u * sa + v * ca))
        if not out or out[-1] != point:
            out.append(point)
    return out


def render_openpose(people: People, width: int, height: int, stick_width: int = 4) -> Image.Image:
    """The body-pose image ControlNet OpenPose models take, drawn as controlnet_aux's
    `draw_poses` / `draw_bodypose` draw it (the ControlNet 1.1 annotator convention, BODY_18):

    - a black RGB canvas of `width` x `height`;
    - person by person, in the order given: first the 17 limbs in `LIMBS` order (neck-r_shoulder,
      neck-l_shoulder, r_shoulder-r_elbow, r_elbow-r_wrist, l_shoulder-l_elbow, l_elbow-l_wrist,
      neck-r_hip, r_hip-r_knee, r_knee-r_ankle, neck-l_hip, l_hip-l_knee, l_knee-l_ankle,
      neck-nose, nose-r_eye, r_eye-r_ear, nose-l_eye, l_eye-l_ear), limb i a filled ellipse
      spanning its two points with semi-minor axis `stick_width`, opaque, in `COLORS[i]` scaled
      by 0.6 (whole numbers cut down: (255, 85, 0) -> (153, 51, 0)); a later limb covers an
      earlier one; then that person's keypoints, keypoint j a filled circle of radius 4 in
      `COLORS[j]` at full strength.
    A limb is skipped when either end is missing. Points are normalised (x times `width`,
    y times `height`), so any size and aspect works; for non-square canvases place presets with
    `preset_pose`/`fit_pose` first so bodies are not stretched.
    """
    _check_size(width, height)
    if stick_width <= 0:
        raise HeadshotError(f"stick_width must be positive (got {stick_width}).", code="invalid_pose")
    people = _checked(people)
    image = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for person in people:
        px = [None if p is None else (p[0] * width, p[1] * height) for p in person]
        for i, (a, b) in enumerate(LIMBS):
            end_a, end_b = px[a], px[b]
            if end_a is not None and end_b is not None:
                shade = tuple(int(c * LIMB_SHADE) for c in COLORS[i])
                draw.polygon(_limb_polygon(end_a, end_b, stick_width), fill=shade, outline=shade)
        for j, p in enumerate(px):
            if p is not None:
                x, y = int(p[0]), int(p[1])
                draw.point([(x + dx, y + dy) for dx, dy in _DISC], fill=COLORS[j])
    return image
