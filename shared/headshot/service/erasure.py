"""The person's right to erasure. DELETE /v1/models/{id}: the LoRA (and its training folder, dataset and
checkpoints), the uploaded photos and every picture drawn with it are removed; its jobs are stopped.
DELETE /v1/jobs/{id}: the pictures of one generation job (a one-photo job's only trace of the person)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from sqlalchemy import delete, select, update

from .config import IMAGES, MODELS, UPLOADS, ServiceConfig
from .db import Job, Model, Picture, Store
from .limits import ServiceError


def erase_model(config: ServiceConfig, store: Store, model_id: str) -> dict:
    with store.session() as s:
        jobs = list(s.scalars(select(Job).where(Job.model_id == model_id)))
        queued = [j.id for j in jobs if j.status == "queued"]
        running = [j.id for j in jobs if j.status == "running"]
        if queued:
            s.execute(update(Job).where(Job.id.in_(queued)).values(status="cancelled", error_code="cancelled"))
        if running:  # their workers stop at the next heartbeat and remove anything written since
            s.execute(update(Job).where(Job.id.in_(running)).values(cancel_requested=True))
        s.execute(delete(Picture).where(Picture.model_id == model_id))
        s.execute(delete(Model).where(Model.id == model_id))
    folders = [config.folder(UPLOADS, model_id), config.folder(MODELS, model_id)]
    folders += [config.folder(IMAGES, j.id) for j in jobs if j.kind == "generate"]
    removed = sum(_remove(folder, config.data_dir) for folder in folders)
    return {"model_id": model_id, "deleted": True, "files_removed": removed, "jobs_cancelled": len(queued + running)}


def erase_job(config: ServiceConfig, store: Store, job: Job) -> dict:
    """A generation job's pictures (rows and files) and its reference photo; a queued job is cancelled first. The
    job's record stays, with no pictures. A training job's output is its model, and a job still drawing could
    write pictures after this: both are refused with what to do instead."""
    if job.kind != "generate":
        raise ServiceError(
            f"job {job.id} trained model {job.model_id}; erase the model (DELETE /v1/models/{job.model_id}), "
            "which removes its photos and every picture drawn with it",
            "wrong_job_kind",
            409,
        )
    cancelled = False
    if job.status == "queued":
        with store.session() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == "queued")  # not if a worker claimed it meanwhile
                .values(status="cancelled", error_code="cancelled", error_message="erased", finished=time.time())
            )
            cancelled = getattr(done, "rowcount", 0) == 1
    current = store.job(job.id)
    if not cancelled and current is not None and current.status in ("queued", "running"):
        raise ServiceError(
            f"job {job.id} is drawing now: cancel it (POST /v1/jobs/{job.id}/cancel), then erase it once its status "
            "is cancelled",
            "job_running",
            409,
        )
    with store.session() as s:
        pictures = getattr(s.execute(delete(Picture).where(Picture.job_id == job.id)), "rowcount", 0)
    removed = sum(_remove(config.folder(kind, job.id), config.data_dir) for kind in (IMAGES, UPLOADS))
    return {"job_id": job.id, "deleted": True, "pictures_removed": pictures, "files_removed": removed}


def drop_reference(config: ServiceConfig, job_id: str) -> int:
    """A one-photo generation's reference photo (uploads/<job id>/), once its job has ended in any way."""
    return _remove(config.folder(UPLOADS, job_id), config.data_dir)


def _remove(folder: Path, data_dir: Path) -> int:
    """Remove one of our folders under --data; a link is removed as a link, never followed."""
    if folder.is_symlink():
        folder.unlink()
        return 1
    if not folder.is_dir() or data_dir.resolve() not in folder.resolve().parents:
        return 0
    count = sum(1 for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    shutil.rmtree(folder, ignore_errors=True)
    return count
