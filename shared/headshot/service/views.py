"""How records look to a client: the same body for GET /v1/jobs/{id} and for the webhook."""

from __future__ import annotations

from sqlalchemy import select

from .config import ServiceConfig
from .db import Job, Model, Picture, Store, loads


def job_view(store: Store, config: ServiceConfig, job: Job) -> dict:
    error = None
    if job.status == "failed":
        error = {"code": job.error_code or "error", "message": job.error_message or "the job failed"}
    view: dict = {
        "job_id": job.id,
        "kind": job.kind,
        "status": job.status,
        "progress": {"step": job.step, "total": job.total, "eta_s": job.eta_s},
        "error": error,
        "model_id": job.model_id or None,  # "" for a one-photo generation: it draws with no model
        "attempts": job.attempts,
        "created": job.created,
        "finished": job.finished,
        "images": None,
        "kept_photos": None,
        "rejected_photos": None,
    }
    result = loads(job.result)
    if job.kind == "train":
        view["kept_photos"] = result.get("kept_photos")
        view["rejected_photos"] = result.get("rejected_photos")
    else:
        with store.session() as s:
            pictures = s.scalars(select(Picture).where(Picture.job_id == job.id).order_by(Picture.position)).all()
        view["images"] = [
            {
                "image_id": p.id,
                "url": f"{config.public_url}/v1/images/{p.id}",
                "seed": p.seed,
                "identity_score": p.identity_score,
                "faceless": p.faceless,
            }
            for p in pictures
        ]
    return view


def model_view(config: ServiceConfig, model: Model) -> dict:
    return {
        "model_id": model.id,
        "instance_name": model.instance_name,
        "trigger": f"{model.trigger} {model.class_type}",
        "class_type": model.class_type,
        "base_model": model.base_model,
        "status": model.status,
        "created": model.created,
        "download_url": f"{config.public_url}/v1/models/{model.id}/lora" if model.status == "ready" else None,
    }
