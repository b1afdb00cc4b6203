"""`headshot generate` and `headshot finish` end to end on tiny random models.

The base model, ControlNet and LoRA are tiny random models of the real architectures
(tests/tiny_models.py; the ControlNet is diffusers' ControlNetModel.from_unet of the tiny UNet,
the LoRA comes from two steps of our trainer): they prove the wiring, files and timing, not
image quality. Their pictures have no faces, which the results must say.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import tiny_models
from PIL import Image

from headshot.finish.detail_and_restore import Finishing, finish_image
from headshot.finish.detailer import DetailerSettings
from headshot.generate.styles import get_style
from headshot.samples import astronaut_shots, insightface_image
from headshot.sampling.protocol import LoraWeight


@pytest.fixture(scope="module")
def tiny_kit(tmp_path_factory):
    """A tiny SD1 folder, an OpenPose-shaped ControlNet for it, and an identity LoRA trained on it."""
    from headshot.train.engine import LoraTrainer
    from headshot.train.launch import create_job
    from headshot.train.settings import TrainSettings

    root = tmp_path_factory.mktemp("kit")
    base = tiny_models.make_tiny_sd1(root / "sd1")
    _tiny_controlnet(base, root / "controlnet")
    data = root / "data" / "img" / "10_ohwx woman"
    data.mkdir(parents=True)
    for i, name in enumerate(["astronaut.png", "astronaut_closeup.jpg"]):
        astronaut_shots()[name].convert("RGB").resize((512, 512)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("ohwx woman")
    settings = TrainSettings(
        dataset_dir=str(root / "data"),
        base_model=str(base),
        out_dir=str(root / "lora"),
        output_name="jane",
        steps=2,
        resolution=32,
        rank=4,
        alpha=4.0,
        validation_images=0,
        face_backend="dlib",
        device="cpu",
        gradient_checkpointing=False,
    )
    LoraTrainer(settings, create_job(settings)).run()
    return {"base": base, "controlnet": root / "controlnet", "lora": root / "lora" / "jane.safetensors"}


def _tiny_controlnet(base, folder):
    """An OpenPose-shaped ControlNet for the tiny base whose pose really steers the UNet.

    from_unet zero-initialises the output convolutions (so training starts from no effect); a
    trained ControlNet's are not zero, and with zeros no test could tell whether the pose arrived.
    """
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(5)  # the hint encoder is initialised at random: the same ControlNet in every run
    # the tiny VAE shrinks 2x, so the ControlNet's hint encoder must too (one stride-2 stage)
    controlnet = ControlNetModel.from_unet(
        UNet2DConditionModel.from_pretrained(base / "unet"), conditioning_embedding_out_channels=(16, 32)
    )
    with torch.no_grad():
        for conv in [
            *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
            controlnet.controlnet_cond_embedding.conv_out,
        ]:
            conv.weight.normal_(0, 1.0)
    controlnet.save_pretrained(folder)
    return folder


def _headshot(*args):
    return subprocess.run([sys.executable, "-m", "headshot", *args], capture_output=True, text=True, timeout=300)


def test_styles_command_lists_the_styles():
    run = _headshot("styles")
    assert run.returncode == 0, run.stderr
    names = [line.split()[0] for line in run.stdout.splitlines() if line.strip()]
    assert "linkedin_corporate" in names and len(names) >= 29


def test_generate_writes_n_images_and_results_in_under_two_minutes(tiny_kit, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    run = _headshot(
        "generate",
        "--base-model",
        str(tiny_kit["base"]),
        "--lora",
        str(tiny_kit["lora"]),
        "--style",
        "linkedin_corporate",
        "--count",
        "3",
        "--out",
        str(out),
        "--controlnet",
        str(tiny_kit["controlnet"]),
        "--size",
        "64x64",
        "--steps",
        "3",
        "--detailer",
        "--face-backend",
        "dlib",
        "--seed",
        "7",
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    assert elapsed < 120, f"took {elapsed:.0f}s"
    results = json.loads((out / "results.json").read_text())
    assert [e["seed"] for e in results] == [7, 8, 9]
    for entry in results:
        assert (out / entry["image"]).is_file() and Image.open(out / entry["image"]).size == (64, 64)
        assert entry["style"] == "linkedin_corporate" and "ohwx woman" in entry["prompt"]
        assert entry["faceless"] is True and entry["identity_score"] is None  # tiny random models draw no faces
    assert "3 without a face" in run.stdout


def test_group_detailing_gives_each_face_its_own_lora(tiny_kit, dlib_analyzer, tmp_path):
    """Two people (a crop of insightface's group photo): the left face is repainted with the first
    LoRA only and the right one with the second, as the group method says."""
    from headshot.sampling.diffusers_sampler import DiffusersSampler

    calls = []

    class Recording(DiffusersSampler):
        def masked_image_to_image(self, request, progress=None):
            calls.append([(lora.path, lora.weight) for lora in request.loras])
            return super().masked_image_to_image(request, progress)

    sampler = Recording(str(tiny_kit["base"]), device="cpu")
    first = str(tiny_kit["lora"])
    second = tmp_path / "second.safetensors"
    second.write_bytes(tiny_kit["lora"].read_bytes())
    pair = insightface_image("t1.jpg").crop((0, 150, 520, 500))
    finishing = Finishing(
        analyzer=dlib_analyzer,
        detailer=DetailerSettings(guide_size=64, steps=2),
        detail_prompt=("two people", ""),
        sampler=sampler,
        group=True,
        detail_loras=[LoraWeight(first, 0.8), LoraWeight(str(second), 0.7)],
    )
    assert len(dlib_analyzer.detect(np.asarray(pair))) >= 2
    image, done = finish_image(pair, finishing, seed=0)
    assert done["detailed_faces"] == 2
    assert calls == [[(first, 0.8)], [(str(second), 0.7)]]


def test_a_missing_lora_file_is_named(tiny_kit, dlib_analyzer, astronaut_img):
    from headshot.errors import HeadshotError
    from headshot.sampling.diffusers_sampler import DiffusersSampler

    finishing = Finishing(
        analyzer=dlib_analyzer,
        detailer=DetailerSettings(guide_size=64, steps=2),
        sampler=DiffusersSampler(str(tiny_kit["base"]), device="cpu"),
        detail_loras=[LoraWeight("nowhere/jane.safetensors", 0.8)],
    )
    with pytest.raises(HeadshotError) as caught:
        finish_image(astronaut_img, finishing, seed=0)
    assert caught.value.code == "lora_missing" and "nowhere/jane.safetensors" in str(caught.value)


def test_finish_ranks_existing_pictures_against_reference_photos(tmp_path):
    shots = astronaut_shots()
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    shots["astronaut_mirrored.jpg"].save(pictures / "a_same.png")
    insightface_image("Tom_Hanks_54745.png").resize((448, 448)).save(pictures / "b_other.png")
    Image.new("RGB", (128, 128), "gray").save(pictures / "c_blank.png")
    reference = tmp_path / "reference"
    reference.mkdir()
    shots["astronaut.png"].save(reference / "me.png")
    run = _headshot(
        "finish",
        str(pictures),
        "--out",
        str(tmp_path / "out"),
        "--reference",
        str(reference),
        "--face-backend",
        "dlib",
        "--top",
        "1",
    )
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results[0]["image"] == "a_same.png" and results[0]["rank"] == 1
    assert results[1]["image"] == "below_top/b_other.png"
    assert results[2]["image"] == "faceless/c_blank.png" and results[2]["faceless"]


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


# --- ID photos, a pose from a photo, ControlNets by name ----------------------------------------

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


def test_controlnet_names_are_found_in_the_controlnet_folders(tiny_kit, tmp_path):
    """--controlnet NAME looks in --controlnet-dir (and the hosts' folders); unknown names list what is there."""
    folders = tiny_kit["controlnet"].parent
    out = tmp_path / "out"
    run = _headshot(
        "generate",
        "--base-model",
        str(tiny_kit["base"]),
        "--style",
        "studio_grey",
        "--count",
        "1",
        "--out",
        str(out),
        "--controlnet",
        "controlnet",
        "--controlnet-dir",
        str(tmp_path / "empty"),
        "--controlnet-dir",
        str(folders),
        "--size",
        "64x64",
        "--steps",
        "2",
        "--face-backend",
        "dlib",
    )
    assert run.returncode == 0, run.stderr
    assert json.loads((out / "results.json").read_text())[0]["pose"] == get_style("studio_grey").pose
    run = _headshot(
        "generate",
        "--base-model",
        str(tiny_kit["base"]),
        "--style",
        "studio_grey",
        "--out",
        str(tmp_path / "out2"),
        "--controlnet",
        "openpose_xl",
        "--controlnet-dir",
        str(folders),
    )
    assert run.returncode == 1 and "controlnet_missing" in run.stderr
    assert f"Searched: {folders}" in run.stderr and "ControlNets there now: controlnet" in run.stderr
