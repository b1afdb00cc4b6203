"""The service's training task around the core's worker process: what an operator sees in the service log.

A real process that aborts after its job was recorded as done stands in for a worker that crashed at exit (say in a
GPU driver's teardown), which cannot happen on demand here."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace

from train_fixtures import finished_run_whose_worker_aborted

from headshot.service.config import ServiceConfig
from headshot.service.db import Store
from headshot.service.training_task import _train


def test_a_worker_that_crashes_after_recording_done_is_logged_and_the_training_stands(tmp_path, monkeypatch, caplog):
    config = ServiceConfig(data_dir=tmp_path)
    monkeypatch.setattr(
        "headshot.train.launch.start_training",
        lambda settings, resume: finished_run_whose_worker_aborted(Path(settings.out_dir)),
    )
    model = SimpleNamespace(base_model="model.safetensors", instance_name="jane")
    beat = SimpleNamespace(cancelled=threading.Event())
    with caplog.at_level(logging.WARNING, logger="headshot.service"):
        record, _ = _train(config, Store(config.database), SimpleNamespace(id="job-1"), model, {}, tmp_path, beat)
    assert record["state"] == "done"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("job job-1: the worker process ended with exit code ") for m in warnings), warnings


def test_what_a_generation_job_left_loaded_is_dropped_before_the_training_worker_starts(tmp_path, monkeypatch):
    """One worker runs both kinds of job: the sampler, face analyzer and restorer it keeps between generation jobs
    would share the card (or the memory) with the training worker process."""
    import gc
    import weakref

    from headshot.service import generation_task

    config = ServiceConfig(data_dir=tmp_path, face_backend="dlib")
    monkeypatch.setattr(generation_task, "_warm", {})
    resident = weakref.ref(generation_task._analyzer(config))  # as a generation job left it
    alive_at_start = []

    def start(settings, resume):
        gc.collect()
        alive_at_start.append(resident() is not None)
        return finished_run_whose_worker_aborted(Path(settings.out_dir))

    monkeypatch.setattr("headshot.train.launch.start_training", start)
    model = SimpleNamespace(base_model="model.safetensors", instance_name="jane")
    beat = SimpleNamespace(cancelled=threading.Event())
    record, _ = _train(config, Store(config.database), SimpleNamespace(id="job-2"), model, {}, tmp_path, beat)
    assert record["state"] == "done" and alive_at_start == [False]
