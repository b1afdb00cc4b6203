"""Training jobs in a worker process and from the command line.

A worker killed after a checkpoint resumes from it and ends like an uninterrupted run; cancel stops it and
leaves a usable checkpoint; a second job in a folder with saved steps is refused; host models are freed
before the worker starts; `headshot train` writes the LoRA and the job record, with the builtin engine and
with the sd-scripts backend (a stand-in checkout). Same tiny SD1 model and three-photo dataset as
test_train.py (tests/train_fixtures.py), trained at 32 px.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import tiny_models
import torch
from train_fixtures import _settings, _train, dataset, sd1_folder  # noqa: F401  (fixtures)

from headshot.errors import HeadshotError
from headshot.train import lora_files, lora_targets
from headshot.train.base_model_loading import load_base_model
from headshot.train.job import JobFolder
from headshot.train.launch import create_job, start_training


def _wait_for_step(job: JobFolder, step: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    offset, seen = 0, 0
    while time.monotonic() < deadline:
        events, offset = job.events(offset)
        for event in events:
            if event["type"] == "checkpoint":
                seen = max(seen, event["step"])
            if event["type"] == "error":
                raise AssertionError(event)
        if seen >= step:
            return seen
        time.sleep(0.05)
    raise AssertionError(
        f"no checkpoint at step {step} within {timeout}s; log: {(job.path / 'worker.log').read_text()}"
    )


def test_killed_worker_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_run(sd1_folder, dataset, tmp_path):
    # killed after its step-10 checkpoint with 30 steps still to go (ample margin: the kill follows the
    # checkpoint event within a poll), then 30+ steps after the resume for a drift to show
    settings = _settings(dataset, sd1_folder, tmp_path / "killed", steps=40, checkpoint_every=5)
    run = start_training(settings)
    _wait_for_step(run.job, 10)
    os.kill(run.process.pid, signal.SIGKILL)
    record = run.wait()
    assert record["state"] == "failed" and record["steps_done"] < 40
    resumed = start_training(settings, resume=True).wait()
    assert resumed["state"] == "done" and resumed["steps_done"] == 40
    events, _ = run.job.events()
    resumes = [e for e in events if e["type"] == "resumed"]
    assert len(resumes) == 1 and resumes[0]["step"] >= 10
    _, straight = _train(_settings(dataset, sd1_folder, tmp_path / "straight", steps=40, checkpoint_every=5))
    a, _ = lora_files.load_lora(resumed["lora"])
    b, _ = lora_files.load_lora(straight["lora"])
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


def test_cancel_stops_and_leaves_a_usable_checkpoint(sd1_folder, dataset, tmp_path):
    settings = _settings(dataset, sd1_folder, tmp_path / "job", steps=2000, checkpoint_every=1000)
    run = start_training(settings)
    deadline = time.monotonic() + 120
    while run.job.read().get("steps_done", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    run.cancel()
    record = run.wait()
    assert record["state"] == "cancelled" and record["steps_done"] < 2000
    step, folder = run.job.checkpoints()[-1]
    assert step == record["steps_done"]
    tensors, metadata = lora_files.load_lora(folder / "lora.safetensors")
    targets = lora_targets.kohya_unet_targets(load_base_model(sd1_folder).unet)
    assert len(tensors) == 3 * len(targets) and metadata["ss_network_dim"] == "4"
    assert not list((tmp_path / "job").glob("*.safetensors")), "a cancelled job publishes no final LoRA"


def test_a_second_job_in_a_folder_with_saved_steps_is_refused(sd1_folder, dataset, tmp_path):
    settings = _settings(dataset, sd1_folder, tmp_path / "out", steps=2, checkpoint_every=2)
    _train(settings)  # in this process: the record stays "running", as after a crash
    with pytest.raises(HeadshotError) as caught:
        create_job(settings)
    assert "--resume" in str(caught.value) and "2 steps saved" in str(caught.value)


def test_cli_train_writes_the_lora_and_job_record(sd1_folder, dataset, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "headshot",
            "train",
            str(dataset),
            "--base-model",
            str(sd1_folder),
            "--out",
            str(out),
            "--steps",
            "4",
            "--rank",
            "4",
            "--resolution",
            "64",
            "--checkpoint-every",
            "2",
            "--face-backend",
            "dlib",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "step 4/4" in run.stdout
    record = json.loads((out / "job.json").read_text())
    assert record["state"] == "done" and record["steps_done"] == 4 and record["chosen_step"] == 4
    assert [p.name for p in out.glob("*.safetensors")] == ["headshot_lora.safetensors"]
    # the worker's thread watching for its parent's end must not abort the interpreter's shutdown (SIGABRT)
    assert "Fatal Python error" not in (out / "worker.log").read_text()


def test_a_worker_that_exits_abnormally_after_recording_its_end_is_reported(tmp_path):
    import subprocess
    import sys

    from train_fixtures import finished_run_whose_worker_aborted

    from headshot.train.job import follow
    from headshot.train.job_reuse import TrainedLora

    run = finished_run_whose_worker_aborted(tmp_path / "out")  # a crash at shutdown
    job = run.job
    events: list[dict] = []
    record = follow(job, run.process, events.append, poll=0.01)
    assert record["state"] == "done"  # what it recorded stands
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert len(warnings) == 1 and f"exit code {run.process.returncode}" in warnings[0], events
    # kept in the record, so the summaries the hosts show (ComfyUI's node, the A1111 tab) carry it
    assert record["worker_exit_warning"] == warnings[0] == job.read()["worker_exit_warning"]
    trained = TrainedLora(record, job.path / "lora.safetensors", job.path, reused=False)
    assert f"warning: {warnings[0]}" in trained.summary("lora")
    reused = TrainedLora(record, job.path / "lora.safetensors", job.path, reused=True)
    assert warnings[0] not in reused.summary("lora")  # a later reuse of the outputs is not that run
    clean = subprocess.Popen([sys.executable, "-c", "pass"])
    clean.wait()
    follow(job, clean, events.append, poll=0.01)
    assert [e["message"] for e in events if e["type"] == "warning"] == warnings  # a clean exit adds none


def test_sd_scripts_backend_records_the_same_job_folder(sd1_folder, dataset, tmp_path):
    """Against a stand-in sd-scripts checkout (test_sd_scripts.FAKE_TRAINER prints sd-scripts'
    progress lines and writes the LoRA file): the job folder, events and output are ours."""
    import subprocess
    import sys

    from test_sd_scripts import FAKE_TRAINER, _fake_checkout

    if sys.version_info < (3, 11):
        import tomli as tomllib
    else:
        import tomllib

    repo = _fake_checkout(tmp_path, FAKE_TRAINER)
    single = tiny_models.save_single_file(sd1_folder, tmp_path / "tiny_sd1.safetensors", "sd1")
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "headshot",
            "train",
            str(dataset),
            "--base-model",
            str(single),
            "--out",
            str(out),
            "--steps",
            "4",
            "--rank",
            "4",
            "--resolution",
            "64",
            "--backend",
            "sd-scripts",
            "--sd-scripts",
            str(repo),
            "--sd-scripts-python",
            sys.executable,
            "--face-backend",
            "dlib",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert [p.name for p in out.glob("*.safetensors")] == ["headshot_lora.safetensors"]
    assert (out / "headshot_lora.safetensors").read_bytes() == b"fake lora"
    config = tomllib.loads((out / "sd-scripts" / "sd-scripts.toml").read_text())
    assert config["caption_extension"] == ".txt" and config["network_dim"] == 4
    data = tomllib.loads(open(config["dataset_config"]).read())
    assert data["datasets"][0]["subsets"][0]["image_dir"] == (dataset / "img" / "10_ohwx woman").resolve().as_posix()
    record = json.loads((out / "job.json").read_text())
    assert record["state"] == "done" and record["steps_done"] == 4 and record["backend"] == "sd-scripts"
    assert (out / "loss.csv").read_text().splitlines()[-1].startswith("4,")


def test_host_models_are_freed_before_the_worker_starts(sd1_folder, dataset, tmp_path, monkeypatch):
    import headshot.train.launch as api

    order = []
    monkeypatch.setattr(api, "start_worker", lambda job, python=None: order.append("worker") or _NoProcess())
    api.start_training(_settings(dataset, sd1_folder, tmp_path / "out"), free_host_models=lambda: order.append("free"))
    assert order == ["free", "worker"]


class _NoProcess:
    """Stands in for the worker's Popen: this test is about the order of calls only."""

    def poll(self):
        return 0
