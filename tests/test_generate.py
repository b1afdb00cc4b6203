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
from PIL import Image

import tiny_models
from headshot.finish.results import Finishing, finish_image
from headshot.finish.detailer import DetailerSettings
from headshot.generate.sampler import LoraWeight
from headshot.samples import astronaut_shots, insightface_image


@pytest.fixture(scope="module")
def tiny_kit(tmp_path_factory):
    """A tiny SD1 folder, an OpenPose-shaped ControlNet for it, and an identity LoRA trained on it."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from headshot.train.api import create_job
    from headshot.train.engine import LoraTrainer
    from headshot.train.settings import TrainSettings

    root = tmp_path_factory.mktemp("kit")
    base = tiny_models.make_tiny_sd1(root / "sd1")
    # the tiny VAE shrinks 2x, so the ControlNet's hint encoder must too (one stride-2 stage)
    ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(base / "unet"),
                              conditioning_embedding_out_channels=(16, 32)).save_pretrained(root / "controlnet")
    data = root / "data" / "img" / "10_ohwx woman"
    data.mkdir(parents=True)
    for i, name in enumerate(["astronaut.png", "astronaut_closeup.jpg"]):
        astronaut_shots()[name].convert("RGB").resize((512, 512)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("ohwx woman")
    settings = TrainSettings(dataset_dir=str(root / "data"), base_model=str(base), out_dir=str(root / "lora"),
                             output_name="jane", steps=2, resolution=32, rank=4, alpha=4.0, validation_images=0,
                             face_backend="dlib", device="cpu", gradient_checkpointing=False)
    LoraTrainer(settings, create_job(settings)).run()
    return {"base": base, "controlnet": root / "controlnet", "lora": root / "lora" / "jane.safetensors"}


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
    run = _headshot("generate", "--base-model", str(tiny_kit["base"]), "--lora", str(tiny_kit["lora"]),
                    "--style", "linkedin_corporate", "--count", "3", "--out", str(out), "--controlnet",
                    str(tiny_kit["controlnet"]), "--size", "64x64", "--steps", "3", "--detailer",
                    "--face-backend", "dlib", "--seed", "7")
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
    from headshot.generate.sampler import DiffusersSampler

    calls = []

    class Recording(DiffusersSampler):
        def masked_image_to_image(self, request, progress=None):
            calls.append([(l.path, l.weight) for l in request.loras])
            return super().masked_image_to_image(request, progress)

    sampler = Recording(str(tiny_kit["base"]), device="cpu")
    first = str(tiny_kit["lora"])
    second = tmp_path / "second.safetensors"
    second.write_bytes(tiny_kit["lora"].read_bytes())
    pair = insightface_image("t1.jpg").crop((0, 150, 520, 500))
    finishing = Finishing(analyzer=dlib_analyzer, detailer=DetailerSettings(guide_size=64, steps=2),
                          detail_prompt=("two people", ""), sampler=sampler, group=True,
                          detail_loras=[LoraWeight(first, 0.8), LoraWeight(str(second), 0.7)])
    assert len(dlib_analyzer.detect(np.asarray(pair))) >= 2
    image, done = finish_image(pair, finishing, seed=0)
    assert done["detailed_faces"] == 2
    assert calls == [[(first, 0.8)], [(str(second), 0.7)]]


def test_a_missing_lora_file_is_named(tiny_kit, dlib_analyzer, astronaut_img):
    from headshot.errors import HeadshotError
    from headshot.generate.sampler import DiffusersSampler

    finishing = Finishing(analyzer=dlib_analyzer, detailer=DetailerSettings(guide_size=64, steps=2),
                          sampler=DiffusersSampler(str(tiny_kit["base"]), device="cpu"),
                          detail_loras=[LoraWeight("nowhere/jane.safetensors", 0.8)])
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
    run = _headshot("finish", str(pictures), "--out", str(tmp_path / "out"), "--reference", str(reference),
                    "--face-backend", "dlib", "--top", "1")
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results[0]["image"] == "a_same.png" and results[0]["rank"] == 1
    assert results[1]["image"] == "below_top/b_other.png"
    assert results[2]["image"] == "faceless/c_blank.png" and results[2]["faceless"]
