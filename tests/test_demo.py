"""`headshot demo`, the README's first command: the sample photos prepared into a dataset, each rejection with its
reason, and (with --base-model) training handed the demo's model options. Real dlib on real photos; training stops
at its launch check here, before a model loads (training itself is tested in test_train*.py)."""

from __future__ import annotations

import json

import pytest
import tiny_models
from tiny_single_files import save_single_file, save_without_vae

from headshot.cli import main


@pytest.fixture(scope="module")
def bare_checkpoint(tmp_path_factory):
    """A tiny SD1 single file saved without its VAE (as many merged checkpoints are)."""
    root = tmp_path_factory.mktemp("demo_model")
    whole = save_single_file(tiny_models.make_tiny_sd1(root / "d"), root / "w.safetensors", "sd1")
    return save_without_vae(whole, root / "bare.safetensors")


def test_demo_prepares_the_sample_photos_then_hands_its_model_options_to_training(tmp_path, capsys, bare_checkpoint):
    # one demo run, as the README's command with a model: a missing --vae file must reach training's own check
    missing = tmp_path / "no_such_vae.safetensors"
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--base-model", str(bare_checkpoint), "--vae", str(missing)]) == 1
    report = json.loads((out / "dataset" / "report.json").read_text())
    kept = [p for p in report["photos"] if p["status"] == "kept"]
    rejected = [p for p in report["photos"] if p["status"] != "kept"]
    assert len(kept) >= 3 and rejected and all(p["reason"] for p in rejected)
    assert len(list((out / "dataset" / "img").rglob("*.png"))) == len(kept)
    captured = capsys.readouterr()
    assert f"{len(kept)} of {len(report['photos'])} photos kept" in captured.out
    assert "error (vae_not_found)" in captured.err and str(missing) in captured.err
