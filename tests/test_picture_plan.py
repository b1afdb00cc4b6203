"""One picture's recipe (generate.picture_plan): the rules every host shares, ID framing, keypoints from outside."""

from __future__ import annotations

import json

import pytest

from headshot.errors import BackendUnavailable, HeadshotError
from headshot.generate.id_photo import frame_head, to_print
from headshot.generate.picture_plan import GROUP_POSES, plan_picture
from headshot.generate.pose import NECK, NOSE, head_extent
from headshot.generate.pose_keypoints import PhotoPose, people_from_json, photo_pose_on_canvas
from headshot.generate.pose_presets import POSE_PRESETS, preset_pose
from headshot.generate.pose_render import render_openpose
from headshot.generate.prompt_syntax import build_prompt
from headshot.generate.styles import get_style


def test_one_person_gets_the_styles_prompt_pose_and_weight():
    style = get_style("studio_grey")
    plan = plan_picture(style, "sd1", [("ohwx", "man")])
    resolved = style.for_family("sd1")
    assert (plan.positive, plan.negative) == build_prompt(resolved, "ohwx", "man")
    assert (plan.width, plan.height, plan.steps, plan.cfg, plan.sampler) == (
        resolved.width,
        resolved.height,
        resolved.steps,
        resolved.cfg,
        resolved.sampler,
    )
    assert plan.lora_weight == resolved.lora_weight and not plan.group
    assert plan.pose == resolved.pose and plan.people == preset_pose(resolved.pose, plan.width, plan.height)
    assert plan.control_image().tobytes() == render_openpose(plan.people, plan.width, plan.height).tobytes()


def test_a_group_shares_the_weight_and_takes_a_group_pose():
    style = get_style("studio_grey")
    plan = plan_picture(style, "sdxl", [("ohwx", "man"), ("sks", "woman")], size=(512, 512))
    assert "ohwx man and sks woman" in plan.positive and "together, 2 people" in plan.positive
    assert plan.group and plan.pose == GROUP_POSES[2] and len(plan.people) == 2
    assert plan.lora_weight == pytest.approx(style.for_family("sdxl").lora_weight / 2)
    four = plan_picture(style, "sd1", [("a", "man"), ("b", "man"), ("c", "man"), ("d", "man")])
    assert four.pose == GROUP_POSES[3]


def test_the_pose_can_be_none_or_another_preset():
    style = get_style("studio_grey")
    assert plan_picture(style, "sd1", [("ohwx", "man")], pose="none").control_image() is None
    arms = plan_picture(style, "sd1", [("ohwx", "man")], pose="arms_crossed")
    assert arms.pose == "arms_crossed"
    with pytest.raises(HeadshotError, match="Did you mean arms_crossed"):
        plan_picture(style, "sd1", [("ohwx", "man")], pose="arms_crosed")


def test_an_id_style_uses_its_presets_size_and_frames_the_head_at_the_presets_share():
    style = get_style("id_photo")
    preset = style.size_presets["china_33x48"]
    plan = plan_picture(style, "sdxl", [("ohwx", "man")], size_preset="china_33x48")
    assert (plan.width, plan.height) == preset.generation_size("sdxl") == (832, 1216)
    assert plan.size_preset is preset
    whole = frame_head(POSE_PRESETS["headshot_front"], 832, 1216, preset.head_share, drop_outside=False)
    assert plan.people == [[p if p is not None and 0 <= p[1] <= 1 else None for p in whole[0]]]
    _, crown, chin = head_extent(whole[0])  # chin to crown, as a share of the height
    assert chin - crown == pytest.approx(preset.head_share) == pytest.approx((28 + 33) / 2 / 48)
    nose = plan.people[0][NOSE]
    assert nose[0] == pytest.approx(0.5, abs=0.01) and 0 < crown < 0.2  # centred, a little headroom
    assert plan.people[0][NECK] is None  # a passport's head leaves the neck below the frame
    # no preset named: the first one; an explicit size wins over the presets
    assert plan_picture(style, "sd1", [("a", "b")]).size_preset.name == next(iter(style.size_presets))
    assert plan_picture(style, "sd1", [("a", "b")], size=(512, 512)).size_preset is None
    with pytest.raises(HeadshotError, match="passport_35x45"):
        plan_picture(style, "sd1", [("a", "b")], size_preset="passport")


def test_to_print_crops_to_the_print_aspect_and_scales_to_its_pixels():
    from PIL import Image

    preset = get_style("id_photo").size_presets["passport_35x45"]
    assert to_print(Image.new("RGB", (512, 656)), preset).size == (413, 531)
    assert to_print(Image.new("RGB", (640, 640)), preset, dpi=600).size == preset.print_pixels(600)
    with pytest.raises(HeadshotError, match="--dpi"):
        to_print(Image.new("RGB", (64, 64)), preset, dpi=10)


def test_frame_head_keeps_the_bodys_proportions_on_any_canvas():
    person = POSE_PRESETS["headshot_front"][0]
    for w, h in ((512, 656), (600, 600)):
        framed = frame_head([person], w, h, 0.3)[0]
        # shoulder width / nose-to-neck height in pixels is the preset's own ratio
        ratio = abs(framed[5][0] - framed[2][0]) * w / (abs(framed[NECK][1] - framed[NOSE][1]) * h)
        assert ratio == pytest.approx(abs(person[5][0] - person[2][0]) / abs(person[NECK][1] - person[NOSE][1]))
    with pytest.raises(HeadshotError, match="face"):
        frame_head([[None, (0.5, 0.5)] + [None] * 16], 64, 64, 0.6)


def test_a_pose_from_a_photo_wins_and_is_placed_as_the_photo_covers_the_canvas():
    style = get_style("studio_grey")
    person = [None] * 18
    person[NOSE], person[NECK] = (0.5, 0.25), (0.5, 0.5)
    photo = PhotoPose([person], (400, 200))  # a wide photo on a square canvas: its sides are cropped
    plan = plan_picture(style, "sd1", [("ohwx", "man")], size=(256, 256), photo_pose=photo)
    assert plan.pose == "photo" and plan.people == photo_pose_on_canvas([person], (400, 200), 256, 256)
    assert plan.people[0][NOSE] == pytest.approx((0.5, 0.25)) and plan.people[0][NECK] == pytest.approx((0.5, 0.5))
    edge = [None] * 18
    edge[NOSE] = (0.05, 0.5)  # in the cropped-away strip
    assert photo_pose_on_canvas([edge], (400, 200), 256, 256)[0][NOSE] is None


def test_keypoints_json_ours_and_openposes():
    people = preset_pose("headshot_front", 512, 512)
    flat = [v for p in people[0] for v in ((p[0] * 512, p[1] * 512, 1.0) if p else (0, 0, 0))]
    openpose = json.dumps({"people": [{"pose_keypoints_2d": flat}], "canvas_width": 512, "canvas_height": 512})
    parsed = people_from_json(openpose, 512, 512)
    assert all((a is None) == (b is None) for a, b in zip(parsed[0], people[0]))
    assert all(a is None or a == pytest.approx(b) for a, b in zip(parsed[0], people[0]))
    one = json.dumps([list(p) if p else None for p in people[0]])  # one person, ours
    assert people_from_json(one, 512, 512) == [[tuple(p) if p else None for p in people[0]]]
    for bad, reason in (("{", "does not parse"), ('{"people": 3}', "people"), ("[[1, 2]]", "18")):
        with pytest.raises(HeadshotError, match=reason):
            people_from_json(bad, 512, 512)


def test_the_pose_detector_check_names_what_to_install_without_loading(monkeypatch, tmp_path):
    from headshot.generate.pose_detect import check_pose_detector

    monkeypatch.setitem(__import__("sys").modules, "controlnet_aux", None)
    with pytest.raises(BackendUnavailable, match="pip install controlnet_aux"):
        check_pose_detector(tmp_path)


def test_subjects_follow_one_rule_for_every_host():
    from headshot.generate.picture_plan import parse_subject_lines, picture_subjects

    # given words win over what the LoRA recorded, which wins over the defaults
    assert picture_subjects("zwx", None, recorded=[("ohwx", "woman")]) == [("zwx", "woman")]
    assert picture_subjects(None, None, recorded=[(None, None)]) == [("ohwx", "person")]
    # several LoRAs: each its own recorded person
    assert picture_subjects("zwx", "man", recorded=[("a", "man"), (None, "woman")]) == [("a", "man"), ("ohwx", "woman")]
    # a written group of two or more wins; one line alone is not a group
    group = parse_subject_lines("sks woman\n\n  zwx  \n")
    assert group == [("sks", "woman"), ("zwx", "")]
    assert picture_subjects("a", "b", group=group) == [("sks", "woman"), ("zwx", "person")]
    assert picture_subjects("a", "b", group=parse_subject_lines("sks woman")) == [("a", "b")]
