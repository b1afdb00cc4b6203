"""Starting, following, cancelling and resuming training jobs: what the CLI and hosts call."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Callable

from ..errors import HeadshotError
from .job import JobFolder, follow, start_worker
from .settings import TrainSettings


class TrainingRun:
    """A training job running in a worker process."""

    def __init__(self, job: JobFolder, process: subprocess.Popen):
        self.job, self.process = job, process

    def cancel(self) -> None:
        """Ask the worker to stop; it saves a checkpoint first, so nothing trained is lost."""
        self.job.request_cancel()

    def wait(self, on_event: Callable[[dict], None] = lambda event: None) -> dict:
        return follow(self.job, self.process, on_event)

    @property
    def running(self) -> bool:
        return self.process.poll() is None


def create_job(settings: TrainSettings, resume: bool = False) -> JobFolder:
    """The job folder for `settings`: new, or the existing one when resuming."""
    out = Path(settings.out_dir)
    job = JobFolder(out)
    if resume:
        if not job.exists():
            raise HeadshotError(f"nothing to resume in {out} (no job.json); start without --resume", "no_job")
        record = job.read()
        if record.get("state") == "done":
            raise HeadshotError(f"the job in {out} is already done: {record.get('lora')}", "job_done")
        job.cancel_path.unlink(missing_ok=True)
        job.update(state="queued", resumed_at=time.time())
        return job
    if job.exists():
        state = job.read().get("state")
        hint = "use --resume to continue it" if state != "done" else "choose another --out folder"
        raise HeadshotError(f"{out} already holds a training job ({state}); {hint}", "job_exists")
    stray = sorted(out.glob("*.safetensors")) if out.is_dir() else []
    if stray:
        raise HeadshotError(f"{out} already holds {stray[0].name}; choose an empty --out folder so no file is "
                            "overwritten", "out_not_empty")
    job.write({"state": "queued", "created_at": time.time(), "settings": settings.to_dict(), "steps_done": 0,
               "paths": {"events": "events.jsonl", "loss_csv": "loss.csv", "loss_curve": "loss.png",
                         "checkpoints": "checkpoints/", "validation": "validation.json", "log": "worker.log"}})
    return job


def start_training(settings: TrainSettings, resume: bool = False,
                   free_host_models: Callable[[], None] | None = None) -> TrainingRun:
    """Start (or resume) training in a worker process.

    `free_host_models` is the host's hook to unload its own models first (ComfyUI's
    model_management.unload_all_models, A1111's sd_models.unload_model_weights): two copies of a
    checkpoint in VRAM is the commonest cause of out-of-memory on 8–12 GB cards.
    """
    job = create_job(settings, resume)
    if free_host_models is not None:
        free_host_models()
    return TrainingRun(job, start_worker(job))
