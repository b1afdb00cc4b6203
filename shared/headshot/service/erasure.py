"""DELETE /v1/models/{id}: the person's right to erasure. The LoRA (and its training folder, dataset and
checkpoints), the uploaded photos and every picture drawn with it are removed; its jobs are stopped."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import delete, select, update

from .config import IMAGES, MODELS, UPLOADS, ServiceConfig
from .db import Job, Model, Picture, Store


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
