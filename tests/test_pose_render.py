"""OpenPose skeleton images: the renderer's conventions and drawing, pixel by pixel.

The renderer is checked pixel by pixel against controlnet_aux's `draw_bodypose` (the ControlNet 1.1
annotator): limb i opaque in 0.6 x colour i, keypoint j in colour j, person by person; and against
that drawing redone with OpenCV from its published constants (limb order, colours, stick width 4,
keypoint radius 4). Missing points and malformed people are handled as the annotator does or refused
with the reason. The presets are in test_pose_presets, the detector wrapper in test_pose_detect.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pose_pixels import px

from headshot.errors import HeadshotError
from headshot.generate.pose import (
    KEYPOINT_NAMES,
    L_EAR,
    L_EYE,
    NECK,
    NOSE,
    R_EAR,
    R_ELBOW,
    R_SHOULDER,
    R_WRIST,
)
from headshot.generate.pose_presets import preset_pose
from headshot.generate.pose_render import COLORS, LIMBS, render_openpose

# A spread-out figure: every limb's midpoint is far from every other limb and keypoint.
SPREAD = [
    (0.50, 0.20),
    (0.50, 0.40),
    (0.30, 0.42),
    (0.15, 0.55),
    (0.08, 0.75),
    (0.70, 0.42),
    (0.85, 0.55),
    (0.92, 0.75),
    (0.38, 0.72),
    (0.30, 0.85),
    (0.25, 0.97),
    (0.62, 0.72),
    (0.70, 0.85),
    (0.75, 0.97),
    (0.40, 0.12),
    (0.60, 0.12),
    (0.30, 0.16),
    (0.70, 0.16),
]

# the documented orders, written out by name
EXPECTED_KEYPOINTS = [
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
]
EXPECTED_COLORS = [
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
]
EXPECTED_LIMBS = [
    ("neck", "r_shoulder"),
    ("neck", "l_shoulder"),
    ("r_shoulder", "r_elbow"),
    ("r_elbow", "r_wrist"),
    ("l_shoulder", "l_elbow"),
    ("l_elbow", "l_wrist"),
    ("neck", "r_hip"),
    ("r_hip", "r_knee"),
    ("r_knee", "r_ankle"),
    ("neck", "l_hip"),
    ("l_hip", "l_knee"),
    ("l_knee", "l_ankle"),
    ("neck", "nose"),
    ("nose", "r_eye"),
    ("r_eye", "r_ear"),
    ("nose", "l_eye"),
    ("l_eye", "l_ear"),
]


def midpoint(a, b):
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


def blended(color, over=(0, 0, 0)) -> tuple:
    return tuple(int(round(0.4 * o + 0.6 * c)) for o, c in zip(over, color))


@pytest.fixture(scope="module")
def spread_image() -> Image.Image:
    return render_openpose([SPREAD], 1024, 1024)


def test_convention_tables_are_the_openpose_body18_ones():
    assert list(KEYPOINT_NAMES) == EXPECTED_KEYPOINTS
    assert [(KEYPOINT_NAMES[a], KEYPOINT_NAMES[b]) for a, b in LIMBS] == EXPECTED_LIMBS
    assert [tuple(c) for c in COLORS] == EXPECTED_COLORS


def test_background_is_black_and_image_is_rgb(spread_image):
    assert spread_image.mode == "RGB" and spread_image.size == (1024, 1024)
    assert spread_image.getpixel((2, 2)) == (0, 0, 0)
    assert spread_image.getpixel((512, 1020)) == (0, 0, 0)


def test_each_limb_midpoint_has_its_own_colour_at_60_percent(spread_image):
    for i, (a, b) in enumerate(EXPECTED_LIMBS):
        a, b = EXPECTED_KEYPOINTS.index(a), EXPECTED_KEYPOINTS.index(b)
        assert px(spread_image, midpoint(SPREAD[a], SPREAD[b])) == blended(COLORS[i]), EXPECTED_LIMBS[i]
    # spelled out for the first and the face limbs
    assert px(spread_image, midpoint(SPREAD[NECK], SPREAD[R_SHOULDER])) == (153, 0, 0)
    assert px(spread_image, midpoint(SPREAD[NECK], SPREAD[NOSE])) == (0, 0, 153)
    assert px(spread_image, midpoint(SPREAD[L_EYE], SPREAD[L_EAR])) == (153, 0, 102)


def test_each_keypoint_has_its_exact_colour(spread_image):
    for j, point in enumerate(SPREAD):
        assert px(spread_image, point) == COLORS[j], KEYPOINT_NAMES[j]


def test_keypoints_are_discs_of_radius_4():
    image = render_openpose([[None, (0.5, 0.5)] + [None] * 16], 200, 200)
    arr = np.asarray(image)
    ys, xs = np.nonzero(arr.any(axis=2))
    assert set(map(tuple, arr[ys, xs])) == {COLORS[NECK]}
    assert xs.max() - xs.min() in (8, 9) and ys.max() - ys.min() in (8, 9)


def test_limb_half_width_is_stick_width():
    # a horizontal neck-r_shoulder limb across the middle of a 400 x 200 canvas
    person = [None, (0.2, 0.5), (0.8, 0.5)] + [None] * 15
    for stick in (4, 8):
        image = render_openpose([person], 400, 200, stick_width=stick)
        assert image.getpixel((200, 100 + stick - 1)) == (153, 0, 0)
        assert image.getpixel((200, 100 - stick + 1)) == (153, 0, 0)
        assert image.getpixel((200, 100 + stick + 2)) == (0, 0, 0)


def test_a_later_persons_limb_covers_an_earlier_one_opaque():
    # person A: horizontal neck-r_shoulder (limb 0, red); person B: vertical neck-nose (limb 12, blue)
    a = [None, (0.3, 0.5), (0.7, 0.5)] + [None] * 15
    b = [(0.5, 0.3), (0.5, 0.7)] + [None] * 16
    assert render_openpose([a, b], 400, 400).getpixel((200, 200)) == (0, 0, 153)  # B's, not a blend
    assert render_openpose([b, a], 400, 400).getpixel((200, 200)) == (153, 0, 0)  # people drawn in order


def test_a_later_persons_limb_covers_an_earlier_persons_keypoint():
    """controlnet_aux draws each person whole (limbs, then keypoints) before the next one."""
    a = [None, (0.5, 0.5)] + [None] * 16  # a lone neck point at the centre
    b = [None, (0.3, 0.5), (0.7, 0.5)] + [None] * 15  # a limb across it
    assert render_openpose([a, b], 400, 400).getpixel((200, 200)) == (153, 0, 0)
    assert render_openpose([b, a], 400, 400).getpixel((200, 200)) == COLORS[NECK]


# controlnet_aux's published constants: limbSeq (1-based keypoint pairs) and colours
PUBLISHED_LIMB_SEQ = [
    [2, 3],
    [2, 6],
    [3, 4],
    [4, 5],
    [6, 7],
    [7, 8],
    [2, 9],
    [9, 10],
    [10, 11],
    [2, 12],
    [12, 13],
    [13, 14],
    [2, 1],
    [1, 15],
    [15, 17],
    [1, 16],
    [16, 18],
]


def _opencv_reference(people, width, height):
    """The annotator's drawing redone with OpenCV (ellipse2Poly, fillConvexPoly, circle) from the
    published constants, as the oracle for our PIL drawing."""
    cv2 = pytest.importorskip("cv2")
    import math

    canvas = np.zeros((height, width, 3), np.uint8)
    for person in people:
        for (i, j), color in zip(PUBLISHED_LIMB_SEQ, EXPECTED_COLORS):
            p, q = person[i - 1], person[j - 1]
            if p is None or q is None:
                continue
            xs, ys = np.array([p[0], q[0]]) * width, np.array([p[1], q[1]]) * height
            length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
            angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
            polygon = cv2.ellipse2Poly((int(xs.mean()), int(ys.mean())), (int(length / 2), 4), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in color])
        for point, color in zip(person, EXPECTED_COLORS):
            if point is not None:
                cv2.circle(canvas, (int(point[0] * width), int(point[1] * height)), 4, color, thickness=-1)
    return canvas


@pytest.mark.parametrize(
    "name, size",
    [("half_body_front", (512, 768)), ("three_people_group", (768, 512)), ("standing_full_body", (512, 512))],
)
def test_the_drawing_matches_the_annotator_drawn_with_opencv(name, size):
    w, h = size
    people = preset_pose(name, w, h)
    ours = np.asarray(render_openpose(people, w, h))
    reference = _opencv_reference(people, w, h)
    drawn = reference.any(axis=2) | ours.any(axis=2)
    same = np.all(ours == reference, axis=2)
    # the same colours everywhere; polygon edges may differ by a pixel between PIL and OpenCV
    assert same[drawn].mean() > 0.98, same[drawn].mean()
    assert set(map(tuple, ours[drawn].reshape(-1, 3))) <= set(map(tuple, reference.reshape(-1, 3)))


def test_missing_points_skip_their_limbs_but_keep_the_other_points():
    person = list(SPREAD)
    person[R_ELBOW] = None
    person[R_EAR] = (0.30, 0.16, 0.0)  # OpenPose JSON style: confidence 0 = not seen
    image = render_openpose([person], 1024, 1024)
    assert px(image, midpoint(SPREAD[R_SHOULDER], SPREAD[R_ELBOW])) == (0, 0, 0)
    assert px(image, midpoint(SPREAD[R_ELBOW], SPREAD[R_WRIST])) == (0, 0, 0)
    assert px(image, SPREAD[R_ELBOW]) == (0, 0, 0)
    assert px(image, SPREAD[R_WRIST]) == COLORS[R_WRIST]  # the wrist is still seen
    assert px(image, midpoint(SPREAD[14], SPREAD[R_EAR])) == (0, 0, 0)  # r_eye-r_ear skipped
    assert px(image, midpoint(SPREAD[NECK], SPREAD[R_SHOULDER])) == (153, 0, 0)


def test_bad_people_are_refused_with_the_reason():
    with pytest.raises(HeadshotError, match="17 points"):
        render_openpose([[None] * 17], 64, 64)
    with pytest.raises(HeadshotError, match="point 3"):
        render_openpose([[None, None, None, "x"] + [None] * 14], 64, 64)
    with pytest.raises(HeadshotError, match="Did you mean headshot_front"):
        preset_pose("headshot_frnt", 512, 512)
