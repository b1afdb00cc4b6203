"""Shared pieces of the `headshot generate` tests (a helper module, not a test file).

The module-scoped `tiny_kit` fixture: a tiny random SD1 folder (tests/tiny_models.py), an
OpenPose-shaped ControlNet made from its UNet (diffusers' ControlNetModel.from_unet, with output
convolutions that are not zero, so the pose really steers the UNet), and an identity LoRA from two
steps of our trainer. And `_headshot`, which runs the CLI in a subprocess. Used by test_generate
and test_generate_pose_control.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import tiny_models

from headshot.samples import astronaut_shots


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
