"""`headshot generate` with a ControlNet: what its forward receives, on tiny random models.

The style's pose skeleton drawn for the canvas, an ID style's preset (the canvas, the head framed at
its share of the height, the printed size), and a pose photo's keypoints (--pose-image, with a
stand-in for controlnet_aux at its import boundary) all reach the ControlNet, and different poses
give different pictures; without controlnet_aux, --pose-image stops before any model loads. The
base model, ControlNet and LoRA are generate_helpers' tiny kit (tests/tiny_models.py): they prove
the wiring, not image quality.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from generate_helpers import _headshot, tiny_kit  # noqa: F401  (tiny_kit: a fixture)
from PIL import Image

from headshot.finish.detail_and_restore import Finishing


@pytest.fixture(scope="module")
def control_sampler(tiny_kit):
    from headshot.sampling.diffusers_sampler import DiffusersSampler

    return DiffusersSampler(str(tiny_kit["base"]), controlnet=str(tiny_kit["controlnet"]), device="cpu")


def test_generate_hands_the_styles_pose_to_the_controlnet(control_sampler, dlib_analyzer, tmp_path):
    """The ControlNet's own forward receives the skeleton of the style's pose, drawn for the canvas."""
    import torch

    from headshot.generate.pose_presets import preset_pose
    from headshot.generate.pose_render import render_openpose
    from headshot.generate.styles import get_style
    from headshot.photoshoot import GenerateSettings, generate

    seen = []

    def spy(module, args, kwargs):
        seen.append(kwargs["controlnet_cond"].detach().float().cpu())

    hook = control_sampler.controlnet.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        results = generate(
            GenerateSettings(style="linkedin_corporate", count=1, out_dir=tmp_path, size=(64, 64), steps=2),
            control_sampler,
            Finishing(analyzer=dlib_analyzer),
        )
    finally:
        hook.remove()
    pose = get_style("linkedin_corporate").pose
    assert results[0]["pose"] == pose and len(seen) == 2  # once per step
    expected = torch.from_numpy(
        np.asarray(render_openpose(preset_pose(pose, 64, 64), 64, 64).convert("RGB"), np.float32) / 255
    ).permute(2, 0, 1)
    assert expected.std() > 0.1  # a skeleton, not a blank picture
    for cond in seen:
        assert torch.allclose(cond[0], expected, atol=1e-3)


def test_the_pose_image_changes_the_picture(control_sampler):
    """Real computation: two different skeletons give different pictures, the same one the same picture."""
    from headshot.generate.pose_presets import preset_pose
    from headshot.generate.pose_render import render_openpose
    from headshot.sampling.protocol import TextToImage

    def draw(pose):
        control = render_openpose(pose, 64, 64)
        return np.asarray(
            control_sampler.text_to_image(
                TextToImage(
                    prompt="ohwx woman",
                    negative="",
                    width=64,
                    height=64,
                    steps=2,
                    cfg=5.0,
                    seed=3,
                    control_image=control,
                )
            ),
            np.int16,
        )

    front = draw(preset_pose("headshot_front", 64, 64))
    assert np.array_equal(front, draw(preset_pose("headshot_front", 64, 64)))
    difference = np.abs(front - draw(preset_pose("two_people_side_by_side", 64, 64))).mean()
    print(f"mean difference between the two poses' pictures: {difference:.2f} of 255")
    assert difference > 1.0  # 3.0 with this seeded ControlNet; 0 when the pose never reaches it


# --- ID photos, a pose from a photo -------------------------------------------------------------

TINY_ID_STYLE = """\
title = "Tiny ID photo"
category = "professional"
prompt = "passport photo of {subject}, white background"
width = 64
height = 80
sampler = "euler"
cfg = 5.0
steps = 2
pose = "headshot_front"

[size_presets.passport_35x45]
title = "Passport, 35 x 45 mm"
print_width = 35
print_height = 45
unit = "mm"
head_height = [32, 36]
sd1 = [64, 80]
sdxl = [64, 80]
"""


def _spy_on_control(sampler, seen):
    def spy(module, args, kwargs):
        seen.append(kwargs["controlnet_cond"].detach().float().cpu())

    return sampler.controlnet.register_forward_pre_hook(spy, with_kwargs=True)


def _as_cond(image):
    import torch

    return torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 255).permute(2, 0, 1)


def test_an_id_style_gives_the_presets_pixels_and_frames_the_head_at_its_share(
    control_sampler, dlib_analyzer, tmp_path
):
    """The ID preset decides the canvas (its sd1 size), the skeleton (the head, chin to crown, at
    34/45 of the height) and the file (cropped and scaled to 35 x 45 mm at the dpi)."""
    import torch

    from headshot.generate.id_photo import frame_head
    from headshot.generate.pose import head_extent
    from headshot.generate.pose_presets import POSE_PRESETS
    from headshot.generate.pose_render import render_openpose
    from headshot.photoshoot import GenerateSettings, generate

    styles = tmp_path / "styles"
    styles.mkdir()
    (styles / "tiny_id.toml").write_text(TINY_ID_STYLE)
    seen = []
    hook = _spy_on_control(control_sampler, seen)
    try:
        results = generate(
            GenerateSettings(style="tiny_id", count=1, out_dir=tmp_path / "out", style_dirs=[styles], dpi=72),
            control_sampler,
            Finishing(analyzer=dlib_analyzer),
        )
    finally:
        hook.remove()
    entry = results[0]
    picture = Image.open(tmp_path / "out" / entry["image"])
    # 35 x 45 mm at 72 dpi
    assert picture.size == (round(35 / 25.4 * 72), round(45 / 25.4 * 72)) == (99, 128) == tuple(entry["print_size"])
    assert entry["size_preset"] == "passport_35x45" and (entry["width"], entry["height"]) == (64, 80)
    head_share = (32 + 36) / 2 / 45
    whole = frame_head(POSE_PRESETS["headshot_front"], 64, 80, head_share, drop_outside=False)
    _, crown, chin = head_extent(whole[0])
    assert chin - crown == pytest.approx(head_share)
    expected = _as_cond(render_openpose(frame_head(POSE_PRESETS["headshot_front"], 64, 80, head_share), 64, 80))
    assert seen and all(torch.allclose(cond[0], expected, atol=1e-3) for cond in seen)


def _fake_controlnet_aux(folder, people_pixels):
    """A stand-in for controlnet_aux at its import boundary (its weights cannot be downloaded here):
    OpenposeDetector.from_pretrained(folder) whose body model 'finds' the given pixel keypoints."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "controlnet_aux").mkdir(exist_ok=True)
    (folder / "controlnet_aux" / "__init__.py").write_text(f"""
import numpy as np

PEOPLE = {people_pixels!r}
LOADED = []


class _Body:
    def __call__(self, bgr):
        candidate, subset = [], []
        for person in PEOPLE:
            row = [-1] * 20
            for j, point in enumerate(person):
                if point is not None:
                    row[j] = len(candidate)
                    candidate.append([point[0], point[1], 0.9, len(candidate)])
            subset.append(row)
        return np.array(candidate, dtype=float), np.array(subset, dtype=float)


class OpenposeDetector:
    def __init__(self):
        self.body_estimation = _Body()

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        LOADED.append(path)
        return cls()
""")


def test_a_pose_photo_reaches_the_controlnet(control_sampler, dlib_analyzer, tmp_path, monkeypatch):
    """--pose-image: the keypoints the annotator finds on the photo are what the ControlNet sees."""
    import importlib

    import torch

    from headshot.generate.pose_keypoints import photo_pose_on_canvas
    from headshot.generate.pose_render import render_openpose
    from headshot.photoshoot import GenerateSettings, generate

    person = [None] * 18
    person[0], person[1], person[2], person[5], person[14], person[15] = (
        (50, 30),
        (50, 60),
        (30, 62),
        (70, 62),
        (45, 25),
        (55, 25),
    )
    fakes = tmp_path / "fakes"
    _fake_controlnet_aux(fakes, [person])
    monkeypatch.syspath_prepend(str(fakes))
    monkeypatch.delitem(sys.modules, "controlnet_aux", raising=False)
    annotators = tmp_path / "annotators"
    annotators.mkdir()
    (annotators / "body_pose_model.pth").write_bytes(b"stand-in")
    photo = tmp_path / "pose.png"
    Image.new("RGB", (100, 100), "white").save(photo)
    seen = []
    hook = _spy_on_control(control_sampler, seen)
    try:
        results = generate(
            GenerateSettings(
                style="linkedin_corporate",
                count=1,
                out_dir=tmp_path / "out",
                size=(64, 64),
                steps=2,
                pose_image=photo,
                annotator_dir=annotators,
            ),
            control_sampler,
            Finishing(analyzer=dlib_analyzer),
        )
    finally:
        hook.remove()
    assert importlib.import_module("controlnet_aux").LOADED == [str(annotators)]
    assert results[0]["pose"] == "photo"
    normalised = [[None if p is None else (p[0] / 100, p[1] / 100) for p in person]]
    expected = _as_cond(render_openpose(photo_pose_on_canvas(normalised, (100, 100), 64, 64), 64, 64))
    assert expected.std() > 0.05  # the photo's skeleton, not a blank picture
    assert seen and all(torch.allclose(cond[0], expected, atol=1e-3) for cond in seen)


def test_pose_image_without_controlnet_aux_stops_before_any_model_loads(tmp_path):
    """The real error path: controlnet_aux is not installed here. The base model named does not
    exist, so reaching the model loader would give another error."""
    photo = tmp_path / "pose.png"
    Image.new("RGB", (64, 64)).save(photo)
    run = _headshot(
        "generate",
        "--base-model",
        str(tmp_path / "no_model"),
        "--style",
        "studio_grey",
        "--out",
        str(tmp_path / "out"),
        "--pose-image",
        str(photo),
        "--annotator-dir",
        str(tmp_path),
        "--controlnet",
        str(tmp_path),
    )
    assert run.returncode == 1
    assert "backend_unavailable" in run.stderr and "pip install controlnet_aux" in run.stderr
    assert "body_pose_model.pth" in run.stderr and "no_model" not in run.stderr
    run = _headshot(
        "generate",
        "--base-model",
        str(tmp_path / "no_model"),
        "--style",
        "studio_grey",
        "--out",
        str(tmp_path / "out"),
        "--pose-image",
        str(photo),
    )
    assert run.returncode == 1 and "--pose-image needs --controlnet" in run.stderr
