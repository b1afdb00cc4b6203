"""headshot.train.job_reuse: job folders named after what decides the result, reused when finished, resumed
when stopped; validation.json read as data. (The ComfyUI node only calls this; its end-to-end run with a tiny
model is in test_comfy_training.py.)"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from headshot.errors import HeadshotError
from headshot.train import job_reuse
from headshot.train.job import JobFolder
from headshot.train.settings import TrainSettings


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "dataset"
    (root / "img" / "10_ohwx woman").mkdir(parents=True)
    (root / "img" / "10_ohwx woman" / "00.txt").write_text("ohwx woman")
    (root / "dataset.toml").write_text("[general]\n")
    (root / "report.json").write_text("{}")  # not read by training: not in the digest
    return root


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "base.safetensors"
    path.write_bytes(b"weights")
    return path


CHOSEN = {
    "output_name": "zoe",
    "preset": "fast",
    "steps": 2,
    "rank": 4,
    "lr": 1e-3,
    "resolution": 32,
    "seed": 1,
    "validation_images": 0,
    "face_backend": "dlib",
    "backend": "builtin",
    "sd_scripts_repo": None,
}


def test_the_job_folder_name_is_what_earlier_versions_gave(tmp_path, dataset, checkpoint):
    """Folders made before the move into the core are found again (same fingerprint formula)."""
    digest = job_reuse.dataset_digest(dataset)
    ident = job_reuse.checkpoint_identity(checkpoint)
    old_key = hashlib.sha256(json.dumps([CHOSEN, digest, ident], sort_keys=True, default=str).encode()).hexdigest()
    assert job_reuse.job_folder(tmp_path, CHOSEN, dataset, checkpoint) == tmp_path / "jobs" / f"zoe-{old_key[:12]}"


def test_what_decides_the_result_changes_the_folder(tmp_path, dataset, checkpoint):
    first = job_reuse.job_folder(tmp_path, CHOSEN, dataset, checkpoint)
    (dataset / "report.json").write_text('{"other": 1}')
    assert job_reuse.job_folder(tmp_path, CHOSEN, dataset, checkpoint) == first
    assert job_reuse.job_folder(tmp_path, {**CHOSEN, "rank": 8}, dataset, checkpoint) != first
    (dataset / "img" / "10_ohwx woman" / "00.txt").write_text("ohwx woman, smiling")
    assert job_reuse.job_folder(tmp_path, CHOSEN, dataset, checkpoint) != first
    with pytest.raises(HeadshotError) as caught:
        job_reuse.job_folder(tmp_path, {**CHOSEN, "output_name": "../x"}, dataset, checkpoint)
    assert caught.value.code == "bad_name"


def test_a_separate_vae_file_gives_its_own_folder(tmp_path, dataset, checkpoint):
    """The VAE encodes the photos: a run with one must not reuse a job trained without it, or with another."""
    vae, other = tmp_path / "vae.safetensors", tmp_path / "other.safetensors"
    vae.write_bytes(b"a VAE")
    other.write_bytes(b"another VAE")
    own = job_reuse.job_folder(tmp_path, CHOSEN, dataset, checkpoint)
    with_vae = job_reuse.job_folder(tmp_path, CHOSEN, dataset, checkpoint, vae)
    assert len({own, with_vae, job_reuse.job_folder(tmp_path, CHOSEN, dataset, checkpoint, other)}) == 3
    assert job_reuse.job_folder(tmp_path, CHOSEN, dataset, checkpoint, vae) == with_vae


def _settings(job_dir, dataset, checkpoint):
    return TrainSettings(dataset_dir=str(dataset), base_model=str(checkpoint), out_dir=str(job_dir), output_name="zoe")


def test_a_finished_job_is_reused_without_training(tmp_path, dataset, checkpoint):
    job_dir = tmp_path / "job"
    JobFolder(job_dir).write(
        {
            "state": "done",
            "lora": "/elsewhere/x.safetensors",
            "chosen_step": 2,
            "steps_done": 2,
            "choice": {"reason": "last checkpoint"},
        }
    )
    (job_dir / "zoe.safetensors").write_bytes(b"lora")
    (job_dir / "zoe.json").write_text(json.dumps({"activation text": "ohwx woman"}))
    trained = job_reuse.train_or_reuse(
        _settings(job_dir, dataset, checkpoint), follow=lambda run: pytest.fail("trained again")
    )
    assert trained.reused and trained.lora == job_dir / "zoe.safetensors"  # never the path the record names
    summary = trained.summary("headshot/zoe.safetensors")
    assert "reused the finished job" in summary and "put 'ohwx woman' in the prompt" in summary
    assert "step 2 (last checkpoint)" in summary and trained.loss_curve is None and trained.samples() == []


def test_a_finished_job_that_lost_its_lora_says_so(tmp_path, dataset, checkpoint):
    job_dir = tmp_path / "job"
    JobFolder(job_dir).write({"state": "done", "chosen_step": 2})
    with pytest.raises(HeadshotError) as caught:
        job_reuse.train_or_reuse(_settings(job_dir, dataset, checkpoint), follow=lambda run: pytest.fail("trained"))
    assert caught.value.code == "lora_missing" and "delete that folder" in str(caught.value)


def test_a_stopped_job_is_resumed_and_a_failed_run_reports_its_code(tmp_path, dataset, checkpoint, monkeypatch):
    job_dir = tmp_path / "job"
    JobFolder(job_dir).write({"state": "cancelled", "steps_done": 1})
    calls = []

    def start(settings, resume, free_host_models, python=None):
        calls.append(resume)
        return "the run"

    monkeypatch.setattr(job_reuse, "start_training", start)
    with pytest.raises(HeadshotError) as caught:
        job_reuse.train_or_reuse(
            _settings(job_dir, dataset, checkpoint),
            follow=lambda run: {"state": "failed", "error": "boom", "error_code": "loss_not_finite"},
        )
    assert calls == [True] and caught.value.code == "loss_not_finite" and "boom" in str(caught.value)


def test_validation_samples_are_read_as_data(tmp_path):
    job_dir = tmp_path / "job"
    (job_dir / "samples").mkdir(parents=True)
    own = job_dir / "samples" / "own.png"
    own.write_bytes(b"png")
    (tmp_path / "private.png").write_bytes(b"png")
    images = [
        {"path": str(tmp_path / "private.png")},
        {"path": str(job_dir / "samples/../../private.png")},
        {"path": str(own)},
        {"no path": 1},
        "junk",
    ]
    (job_dir / "validation.json").write_text(json.dumps({"checkpoints": [{"step": 5, "images": images}, "junk"]}))
    assert job_reuse.chosen_samples(job_dir, 5) == [own.resolve()]
    (job_dir / "validation.json").write_text("{ damaged")
    assert job_reuse.chosen_samples(job_dir, 5) == [own]  # every sample, not a failed run


def test_install_copy_brings_the_sidecars_and_skips_an_identical_file(tmp_path):
    job_dir, loras = tmp_path / "job", tmp_path / "loras" / "headshot"
    job_dir.mkdir()
    for name, data in (("zoe.safetensors", b"lora"), ("zoe.json", b"{}"), ("zoe.identity.json", b"{}")):
        (job_dir / name).write_bytes(data)
    target = job_reuse.install_copy(job_dir / "zoe.safetensors", loras, "zoe")
    assert target == loras / "zoe.safetensors" and sorted(p.name for p in loras.iterdir()) == [
        "zoe.identity.json",
        "zoe.json",
        "zoe.safetensors",
    ]
    before = os.stat(target).st_mtime_ns
    job_reuse.install_copy(job_dir / "zoe.safetensors", loras, "zoe")
    assert os.stat(target).st_mtime_ns == before
