"""The pose presets: 18 OpenPose points per person, fitted to any canvas size without stretching.

Every preset renders with its keypoints in their exact colours at any size, keeps its proportions,
faces the camera, leaves headroom in the headshots; the three-quarter ones mirror each other, the
group ones draw one skeleton per person, and fit_pose drops the points that leave the canvas.
"""

from __future__ import annotations

import numpy as np
import pytest
from pose_pixels import px

from headshot.generate.pose import (
    KEYPOINT_NAMES,
    L_EAR,
    NECK,
    NOSE,
    R_EAR,
    R_SHOULDER,
    fit_pose,
    mirror_pose,
)
from headshot.generate.pose_presets import POSE_PRESETS, preset_pose
from headshot.generate.pose_render import COLORS, render_openpose


@pytest.mark.parametrize("size", [(512, 768), (1024, 1024)])
def test_presets_render_at_any_size_with_exact_keypoints_and_kept_proportions(size):
    w, h = size
    for name in ("half_body_front", "headshot_front", "standing_full_body"):
        people = preset_pose(name, w, h)
        image = render_openpose(people, w, h)
        assert image.size == (w, h)
        drawn = [(j, p) for j, p in enumerate(people[0]) if p is not None]
        assert len(drawn) == sum(p is not None for p in POSE_PRESETS[name][0])  # nothing pushed out
        for j, p in drawn:
            assert 0 <= p[0] <= 1 and 0 <= p[1] <= 1
            assert px(image, p) == COLORS[j], (name, size, KEYPOINT_NAMES[j])
        # no stretching: shoulder width / nose-to-neck height is the same as in the square preset
        raw = POSE_PRESETS[name][0]
        fitted = people[0]

        def ratio(pts, sx, sy):
            shoulders = abs(pts[5][0] - pts[2][0]) * sx
            neck = abs(pts[NECK][1] - pts[NOSE][1]) * sy
            return shoulders / neck

        assert ratio(fitted, w, h) == pytest.approx(ratio(raw, 1, 1), rel=1e-6)


def test_headshot_preset_leaves_headroom_and_keeps_both_shoulders_low_in_the_frame():
    for w, h in ((512, 640), (512, 768), (1024, 1024), (832, 1216), (1216, 832)):
        for name in ("headshot_front", "headshot_three_quarter_left", "headshot_three_quarter_right"):
            person = preset_pose(name, w, h)[0]
            eyes_y = person[14][1]
            assert 0.2 < eyes_y < 0.45, (name, w, h)
            for shoulder in (person[R_SHOULDER], person[5]):
                assert shoulder is not None and shoulder[1] > 0.6, (name, w, h)
                assert 0.015 < shoulder[0] < 0.985, (name, w, h)


def test_two_person_preset_draws_two_skeletons():
    people = preset_pose("two_people_side_by_side", 1024, 1024)
    assert len(people) == 2
    image = render_openpose(people, 1024, 1024)
    arr = np.asarray(image)
    neck_color = np.all(arr == COLORS[NECK], axis=2)
    left, right = neck_color[:, :512].sum(), neck_color[:, 512:].sum()
    assert left > 20 and right > 20  # a neck disc in each half
    for person in people:
        assert px(image, person[NECK]) == COLORS[NECK]
        assert px(image, person[NOSE]) == COLORS[NOSE]
    # one person alone leaves the other half empty of skeleton
    alone = np.asarray(render_openpose(people[:1], 1024, 1024))
    assert alone[:, 512:].sum() == 0 and arr[:, 512:].sum() > 0
    assert len(POSE_PRESETS["three_people_group"]) == 3


def test_every_preset_has_18_points_per_person_in_the_unit_square():
    required = {
        "headshot_front",
        "headshot_three_quarter_left",
        "headshot_three_quarter_right",
        "half_body_front",
        "arms_crossed",
        "standing_full_body",
        "two_people_side_by_side",
        "three_people_group",
    }
    assert required <= set(POSE_PRESETS)
    for name, people in POSE_PRESETS.items():
        for person in people:
            assert len(person) == 18, name
            assert person[NECK] is not None and person[NOSE] is not None, name
            for p in person:
                assert p is None or (0 <= p[0] <= 1 and 0 <= p[1] <= 1), name


def test_people_face_the_camera_so_their_right_side_is_on_the_image_left():
    for name in ("headshot_front", "half_body_front", "standing_full_body"):
        person = POSE_PRESETS[name][0]
        assert person[R_SHOULDER][0] < person[NECK][0] < person[5][0], name
        assert person[14][0] < person[15][0], name  # r_eye left of l_eye


def test_three_quarter_presets_are_mirror_images_with_the_far_ear_hidden():
    left = POSE_PRESETS["headshot_three_quarter_left"][0]
    right = POSE_PRESETS["headshot_three_quarter_right"][0]
    assert left[R_EAR] is None and left[L_EAR] is not None
    assert right[L_EAR] is None and right[R_EAR] is not None
    assert left[NOSE][0] < 0.5 < right[NOSE][0]
    assert mirror_pose([left]) == [right]
    assert mirror_pose(mirror_pose([left])) == [list(left)]


def test_fit_pose_drops_points_that_leave_the_canvas():
    # frame only the head at a large share: the hips fall off the bottom
    people = fit_pose(POSE_PRESETS["half_body_front"], 512, 512, frame=(NOSE, 14, 15, 16, 17), fill=0.5)
    person = people[0]
    assert person[8] is None and person[11] is None  # hips
    assert person[NOSE] is not None
    kept = fit_pose(POSE_PRESETS["half_body_front"], 512, 512, frame=(NOSE,), fill=0.5, drop_outside=False)[0]
    assert kept[8] is not None and kept[8][1] > 1
