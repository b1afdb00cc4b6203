"""Launching training jobs: the checks before, the job folder (new or resumed), the worker process, and
following or cancelling it. What the CLI and hosts call."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

from ..errors import HeadshotError
from ..outputs import FolderBusy, check_writable
from .job import JobFolder, follow, start_worker
from .settings import TrainSettings, resume_settings

#: seconds a worker gets to save its checkpoint after a cancel before a host that cannot wait stops it hard
CANCEL_GRACE = 60.0


class TrainingRun:
    """A training job running in a worker process."""

    def __init__(self, job: JobFolder, process: subprocess.Popen):
        self.job, self.process = job, process

    def cancel(self) -> None:
        """Ask the worker to stop; it saves a checkpoint first, so nothing trained is lost."""
        self.job.request_cancel()

    def wait(self, on_event: Callable[[dict], None] = lambda event: None) -> dict:
        return follow(self.job, self.process, on_event)

    def stop(self, grace: float = CANCEL_GRACE) -> dict:
        """Cancel, and wait for the worker to save its checkpoint and exit; one still running after `grace`
        seconds is killed (recorded as such; its last checkpoint stays resumable). Returns the final record."""
        self.cancel()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.wait()

    @property
    def running(self) -> bool:
        return self.process.poll() is None


def check_inputs(settings: TrainSettings) -> None:
    """Everything that can be checked before a model loads or a file is written: the options, the dataset,
    the base model's presence, and that --out can be written."""
    from .dataset import load_training_set

    settings.validate()
    load_training_set(settings.dataset_dir)
    model = str(settings.base_model)
    if not Path(model).expanduser().exists():
        from .diffusers_loading import looks_like_hub_id

        if not looks_like_hub_id(model):
            raise HeadshotError(
                f"--base-model {model}: no such file or folder (give a .safetensors/.ckpt checkpoint, "
                "a diffusers folder or a Hugging Face hub id)",
                "base_model_not_found",
            )
    if settings.vae:
        from .vae_files import existing_vae_file

        existing_vae_file(settings.vae)
    else:  # a single file saved without its VAE is said now, not after a worker has started and loaded
        from ..families.checkpoint_detection import base_model_family

        base_model_family(model, needs_vae=True)
    if settings.class_images_dir and not Path(settings.class_images_dir).is_dir():
        raise HeadshotError(f"--class-images {settings.class_images_dir}: no such folder", "no_class_images")
    if settings.backend == "sd-scripts" and not settings.sd_scripts_repo:
        raise HeadshotError("--backend sd-scripts needs --sd-scripts PATH (a kohya sd-scripts checkout)", "bad_option")
    check_writable(settings.out_dir, "--out")


def input_fingerprints(settings: TrainSettings) -> dict:
    """What the dataset and base model are, independent of where they lie (a resume compares these)."""
    from .dataset import load_training_set

    training_set = load_training_set(settings.dataset_dir)
    digest = hashlib.sha256()
    for image in training_set.images:
        digest.update(f"{image.subset}/{image.path.name}|{image.path.stat().st_size}|{image.caption}\n".encode())
    model = Path(settings.base_model).expanduser()
    if model.is_file():
        identity = f"{model.name} ({model.stat().st_size} bytes)"
    elif model.is_dir():
        size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
        identity = f"{model.name}/ ({size} bytes)"
    else:
        identity = str(settings.base_model)  # a hub id
    inputs = {"dataset": digest.hexdigest(), "base_model": identity}
    if settings.vae:  # only when given: a job from before --vae keeps its fingerprints
        vae = Path(settings.vae).expanduser()
        inputs["vae"] = f"{vae.name} ({vae.stat().st_size} bytes)" if vae.is_file() else str(settings.vae)
    return inputs


def _refuse_busy(job: JobFolder, record: dict) -> None:
    if record.get("state") in ("queued", "running"):
        raise FolderBusy(
            f"{job.path} is in use by process {record.get('worker_pid')} (a training worker): wait for "
            "it to finish or stop it, then run again (one writer per training job)"
        )


def _create(job: JobFolder, settings: TrainSettings, resume: bool, given: set[str] | None) -> JobFolder:
    """create_job's work, with the folder's lock already held."""
    out = job.path
    inputs = input_fingerprints(settings)
    if resume:
        if not job.exists():
            raise HeadshotError(f"nothing to resume in {out} (no job.json); start without --resume", "no_job")
        record = job.status(holding_lock=True)
        _refuse_busy(job, record)
        if record.get("state") == "done":
            raise HeadshotError(f"the job in {out} is already done: {job.lora_path(record)}", "job_done")
        merged = resume_settings(record.get("settings") or {}, settings, given, str(out), record.get("steps_done") or 0)
        before = record.get("inputs") or {}
        changed = [
            f"{'the dataset' if key == 'dataset' else '--base-model'} (was {before[key]!r}, now {inputs[key]!r})"
            for key in ("dataset", "base_model")
            if before.get(key, inputs[key]) != inputs[key]
        ]
        if changed:
            raise HeadshotError(
                "the job cannot resume with another " + "; ".join(changed) + ": resume with the "
                "dataset and model it started with, or start a new job in another --out folder",
                "resume_mismatch",
            )
        job.cancel_path.unlink(missing_ok=True)
        # what the last worker ended with is that worker's, not this one's
        ended = ("error", "error_code", "traceback", "worker_exit_warning")
        record = {k: v for k, v in record.items() if k not in ended}
        job.write(
            {
                **record,
                "state": "queued",
                "resumed_at": time.time(),
                "updated_at": time.time(),
                "settings": merged.to_dict(),
                "inputs": inputs,
            }
        )
        return job
    if job.exists():
        record = job.status(holding_lock=True)
        _refuse_busy(job, record)
        state = record.get("state")
        if state == "done":
            raise HeadshotError(
                f"{out} already holds a finished training job; choose another --out folder", "job_exists"
            )
        saved = job.checkpoints() or job.legacy_checkpoints()
        if saved:
            raise HeadshotError(
                f"{out} already holds a training job ({state}, {saved[-1][0]} steps saved); use "
                "--resume to continue it, or choose another --out folder",
                "job_exists",
            )
        job.remove_own_files()  # it failed before its first checkpoint (a typo): start it again, fixed
    stray = sorted(out.glob("*.safetensors")) if out.is_dir() else []
    if stray:
        raise HeadshotError(
            f"{out} already holds {stray[0].name}; choose an empty --out folder so no file is overwritten",
            "out_not_empty",
        )
    settings = TrainSettings.from_dict({**settings.to_dict(), "out_dir": str(out)})
    job.write(
        {
            "state": "queued",
            "created_at": time.time(),
            "settings": settings.to_dict(),
            "steps_done": 0,
            "inputs": inputs,
            "paths": {
                "events": "events.jsonl",
                "loss_csv": "loss.csv",
                "loss_curve": "loss.png",
                "checkpoints": "checkpoints/",
                "validation": "validation.json",
                "log": "worker.log",
            },
        }
    )
    return job


def create_job(settings: TrainSettings, resume: bool = False, given: set[str] | None = None) -> JobFolder:
    """The job folder for `settings`: new, or the existing one when resuming (see start_training)."""
    job = JobFolder(settings.out_dir)
    with job.lock():
        return _create(job, settings, resume, given)


def start_training(
    settings: TrainSettings,
    resume: bool = False,
    free_host_models: Callable[[], None] | None = None,
    given: set[str] | None = None,
    python: str | None = None,
) -> TrainingRun:
    """Start (or resume) training in a worker process, after checking everything that can be checked.

    `given`: with `resume`, the settings the caller chose now (None: all); the rest come from the job.
    `free_host_models` is the host's hook to unload its own models first (ComfyUI's
    model_management.unload_all_models, A1111's sd_models.unload_model_weights): two copies of a
    checkpoint in VRAM is the commonest cause of out-of-memory on 8–12 GB cards.
    `python`: the interpreter that runs the worker (default: this one), e.g. a trainer venv beside a host
    whose own packages cannot train.
    """
    check_inputs(settings)
    job = JobFolder(settings.out_dir)
    with job.lock():  # held until the worker is started and recorded; the worker then takes it over
        _create(job, settings, resume, given)
        if free_host_models is not None:
            free_host_models()
        process = start_worker(job, python)
        job.update(worker_pid=getattr(process, "pid", None), started_by=os.getpid())
    return TrainingRun(job, process)
