"""`headshot demo`, the README's first command: the sample photos prepared into a dataset, each rejection with its
reason, and (with --base-model) training handed the demo's model options. Real dlib on real photos; the training
checks stop at the launch check, before a model loads (training itself is tested in test_train*.py)."""

from __future__ import annotations

import json

import pytest
import tiny_models
from tiny_single_files import save_single_file, save_without_vae

from headshot.cli import main


def test_demo_prepares_the_sample_photos_with_a_reason_for_every_one_left_out(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    report = json.loads((tmp_path / "demo" / "dataset" / "report.json").read_text())
    kept = [p for p in report["photos"] if p["status"] == "kept"]
    rejected = [p for p in report["photos"] if p["status"] != "kept"]
    assert len(kept) >= 3 and rejected and all(p["reason"] for p in rejected)
    assert len(list((tmp_path / "demo" / "dataset" / "img").rglob("*.png"))) == len(kept)
    assert "next: train an identity LoRA on it with" in capsys.readouterr().out


@pytest.fixture(scope="module")
def bare_checkpoint(tmp_path_factory):
    """A tiny SD1 single file saved without its VAE (as many merged checkpoints are)."""
    root = tmp_path_factory.mktemp("demo_model")
    whole = save_single_file(tiny_models.make_tiny_sd1(root / "d"), root / "w.safetensors", "sd1")
    return save_without_vae(whole, root / "bare.safetensors")


def test_demo_training_takes_the_vae_option(tmp_path, capsys, bare_checkpoint):
    # without --vae this checkpoint is refused naming --vae FILE (tests/test_vae_file.py): demo must take it
    missing = tmp_path / "no_such_vae.safetensors"
    args = ["demo", "--out", str(tmp_path / "demo"), "--base-model", str(bare_checkpoint), "--vae", str(missing)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "error (vae_not_found)" in err and str(missing) in err  # the file reached training's own check
