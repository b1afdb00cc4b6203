"""`headshot serve --vae FILE`: a service whose checkpoint was saved without a VAE trains and draws with the file.

Tiny random SD1 single files of the real architecture (tests/tiny_single_files.py), one with its VAE taken out into
a file of its own: these prove where the VAE comes from and what is refused, not image quality."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import tiny_models
import torch
from safetensors.torch import load_file
from tiny_single_files import save_single_file, save_without_vae

from headshot.cli.serve import add_serve_commands, service_config
from headshot.errors import HeadshotError
from headshot.service.config import ServiceConfig
from headshot.service.db import Store


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint without its VAE, and that VAE (scaled, so it is told apart from any other) in a file."""
    root = tmp_path_factory.mktemp("service_vae")
    whole = save_single_file(tiny_models.make_tiny_sd1(root / "diffusers"), root / "whole.safetensors", "sd1")
    bare = save_without_vae(whole, root / "bare.safetensors", root / "vae.safetensors", vae_scale=0.5)
    return SimpleNamespace(
        bare=bare, vae=root / "vae.safetensors", vae_tensors=load_file(str(root / "vae.safetensors"))
    )


def _config(data: Path, *options: str) -> ServiceConfig:
    parser = argparse.ArgumentParser()
    add_serve_commands(parser.add_subparsers())
    return service_config(parser.parse_args(["serve", "--data", str(data), *options]))


def test_serve_refuses_a_checkpoint_saved_without_a_vae_at_start_naming_the_option(files, tmp_path):
    with pytest.raises(HeadshotError) as caught:
        _config(tmp_path / "data", "--base-model", str(files.bare))
    assert caught.value.code == "checkpoint_without_vae" and "--vae FILE" in str(caught.value)
    config = _config(tmp_path / "data", "--base-model", str(files.bare), "--vae", str(files.vae))
    assert config.vae == str(files.vae.resolve())


def test_serve_refuses_a_vae_file_that_is_not_there(files, tmp_path):
    with pytest.raises(HeadshotError) as caught:
        _config(tmp_path / "data", "--base-model", str(files.bare), "--vae", str(tmp_path / "nope.safetensors"))
    assert caught.value.code == "vae_not_found" and "nope.safetensors" in str(caught.value)


def test_training_jobs_are_given_the_services_vae(files, tmp_path, monkeypatch):
    from train_fixtures import finished_run_whose_worker_aborted

    from headshot.service.training_task import _train

    config = ServiceConfig(data_dir=tmp_path, base_model=str(files.bare), vae=str(files.vae))
    monkeypatch.setattr(  # the worker is the core's, tested on its own with --vae (tests/test_vae_file.py)
        "headshot.train.launch.start_training",
        lambda settings, resume: finished_run_whose_worker_aborted(Path(settings.out_dir)),
    )
    model = SimpleNamespace(base_model=str(files.bare), instance_name="jane")
    beat = SimpleNamespace(cancelled=threading.Event())
    _, settings = _train(config, Store(config.database), SimpleNamespace(id="job-1"), model, {}, tmp_path, beat)
    assert settings.vae == str(files.vae)


def test_the_services_sampler_draws_with_its_vae(files, tmp_path):
    from headshot.service.generation_task import warm_sampler

    config = ServiceConfig(data_dir=tmp_path, base_model=str(files.bare), vae=str(files.vae), device="cpu")
    vae = warm_sampler(config).base.vae.state_dict()
    # the file's LDM keys are renamed to diffusers' ones: compare the weights of one that keeps its shape and place
    assert torch.equal(vae["encoder.conv_in.weight"], files.vae_tensors["encoder.conv_in.weight"])
