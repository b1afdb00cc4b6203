"""`headshot generate` and `headshot finish` end to end on tiny random models.

The base model, ControlNet and LoRA are tiny random models of the real architectures
(tests/tiny_models.py; the ControlNet is diffusers' ControlNetModel.from_unet of the tiny UNet,
the LoRA comes from two steps of our trainer; both built by generate_helpers): they prove the
wiring, files and timing, not image quality. Their pictures have no faces, which the results must
say. Here: the styles command, generating with a LoRA and a ControlNet, detailing each face of a
group with its own LoRA, a missing LoRA file, ranking existing pictures against reference photos,
and finding ControlNets by name. What the ControlNet is given (the style's pose, an ID photo's
framing, a pose photo) is tested in test_generate_pose_control.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from generate_helpers import _headshot, tiny_kit  # noqa: F401  (tiny_kit: a fixture)
from PIL import Image

from headshot.cli import main
from headshot.finish.detail_and_restore import Finishing, finish_image
from headshot.finish.detailer import DetailerSettings
from headshot.generate.styles import get_style
from headshot.samples import astronaut_shots, insightface_image
from headshot.sampling.protocol import LoraWeight


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


def test_cpu_sampling_reuses_freed_blocks_then_hands_them_back(tiny_kit):
    """On the CPU a picture is drawn with glibc keeping freed blocks for reuse (the VAE decode at 512 px:
    9.8 s a picture with fresh pages, 7.3 s reused) and the window closes when the picture is done."""
    from headshot import devices
    from headshot.sampling.diffusers_sampler import DiffusersSampler
    from headshot.sampling.protocol import TextToImage

    sampler = DiffusersSampler(str(tiny_kit["base"]), device="cpu")
    depth_at_each_step = []
    request = TextToImage(prompt="a portrait", negative="", width=64, height=64, steps=2, cfg=5.0, seed=0)
    sampler.text_to_image(request, lambda done, total, what: depth_at_each_step.append(devices._reuse_depth))
    assert depth_at_each_step == [1, 1]
    assert devices._reuse_depth == 0


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


def test_controlnet_names_are_found_in_the_controlnet_folders(tiny_kit, tmp_path, capsys):
    """--controlnet NAME looks in --controlnet-dir (and the hosts' folders); unknown names list what is there.
    In this process: the command's own start-up is what test_generate_writes_n_images_... covers."""
    folders = tiny_kit["controlnet"].parent
    out = tmp_path / "out"
    common = ["generate", "--base-model", str(tiny_kit["base"]), "--style", "studio_grey"]
    code = main([
        *common, "--count", "1", "--out", str(out), "--controlnet", "controlnet",
        "--controlnet-dir", str(tmp_path / "empty"), "--controlnet-dir", str(folders),
        "--size", "64x64", "--steps", "2", "--face-backend", "dlib",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())[0]["pose"] == get_style("studio_grey").pose
    capsys.readouterr()
    code = main(
        [*common, "--out", str(tmp_path / "out2"), "--controlnet", "openpose_xl", "--controlnet-dir", str(folders)]
    )
    err = capsys.readouterr().err
    assert code == 1 and "controlnet_missing" in err
    assert f"Searched: {folders}" in err and "ControlNets there now: controlnet" in err
