"""The skeleton image ControlNet OpenPose models take, drawn as the ControlNet 1.1 annotator draws it."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from ..errors import HeadshotError
from .pose import (
    L_ANKLE,
    L_EAR,
    L_ELBOW,
    L_EYE,
    L_HIP,
    L_KNEE,
    L_SHOULDER,
    L_WRIST,
    NECK,
    NOSE,
    R_ANKLE,
    R_EAR,
    R_ELBOW,
    R_EYE,
    R_HIP,
    R_KNEE,
    R_SHOULDER,
    R_WRIST,
    People,
    _check_size,
    _checked,
)

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
