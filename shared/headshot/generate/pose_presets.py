"""The pose presets: coordinate data for ControlNet OpenPose, and how each is framed on a canvas.

The presets are drawn for a SQUARE canvas (x and y share one unit, so bodies keep their
proportions). For any other size, `preset_pose(name, width, height)` places the figure on that
canvas without stretching it (see `pose.fit_pose`).
"""

from __future__ import annotations

from typing import Sequence

from ..errors import HeadshotError
from .pose import HEAD_POINTS, L_SHOULDER, NECK, R_SHOULDER, People, Point, fit_pose, mirror_pose

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


POSE_PRESETS: dict = {
    "headshot_front": [_HEADSHOT_FRONT],
    "headshot_three_quarter_left": [_HEADSHOT_THREE_QUARTER_LEFT],
    # the turn toward the image's right is the mirror image of the turn toward its left
    "headshot_three_quarter_right": mirror_pose([_HEADSHOT_THREE_QUARTER_LEFT]),
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
