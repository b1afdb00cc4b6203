"""The HTTP API (FastAPI): `create_app(config)`. OpenAPI at /openapi.json, docs at /docs.

Every error is JSON `{"error": {"code", "message"}}`: bad input gets a 4xx naming cause and fix, never a 500.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import HeadshotError
from .auth import KeyChecker
from .config import ServiceConfig
from .db import Model, Picture, Store
from .erasure import drop_reference, erase_job, erase_model
from .limits import BodyLimit, ServiceError
from .page import add_page
from .schemas import (
    CancelView,
    Erased,
    ErrorBody,
    GenerateAccepted,
    GenerateRequest,
    JobErased,
    JobView,
    ModelList,
    ModelView,
    StyleList,
    TrainAccepted,
    TrainRequest,
)
from .submit import owned_job, owned_model, submit_generation, submit_training
from .views import job_view, model_view

log = logging.getLogger("headshot.service")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": what}
    for code, what in {
        400: "the body cannot be read as JSON (not UTF-8)",
        401: "no or unknown API key",
        403: "the body names another user than the API key's",
        404: "no such item of yours",
        409: "the Idempotency-Key was used for another request, the model is not ready, or the job is running",
        413: "the request or a photo is too large",
        422: "the request cannot be used (the message says why)",
        429: "too many jobs or the daily quota (see Retry-After)",
    }.items()
}

#: a retried POST with the same key returns the same job; visible ASCII, so what is sent is what is stored
IdempotencyKey = Annotated[
    str | None,
    Header(min_length=1, max_length=255, pattern=r"^[!-~](?:[ -~]*[!-~])?$", description="makes a retried POST safe"),
]


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_sentence(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "the body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) + " (see /docs for the request's schema)"


def create_app(config: ServiceConfig, store: Store | None = None, queue=None) -> FastAPI:
    """The API over `config`; `store` and `queue` default to the ones the config names."""
    store = store or Store(config.database)
    if queue is None:
        from .tasks import JobQueue

        queue = JobQueue(config, store)
    keys = KeyChecker(store)
    app = FastAPI(
        title="Headshot Studio",
        version="1",
        description="Train an identity LoRA from selfies, then draw styled headshots ranked by likeness.",
        responses=ERRORS,  # every route answers its errors in this one shape, the page's routes too
    )
    app.state.store, app.state.queue, app.state.config = store, queue, config

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return _error(exc.status, exc.code, str(exc), exc.headers)

    @app.exception_handler(HeadshotError)
    async def core_error(request: Request, exc: HeadshotError):
        return _error(422, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(422, "invalid_request", _validation_sentence(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        message = {
            400: "the body cannot be read: send a JSON object in UTF-8 (see /docs for the request's schema)",
            404: "no such address; see /docs",
            405: "this address does not take that method; see /docs",
        }
        return _error(exc.status_code, code, message.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, "error", "the server failed on this request; it is logged, try again later")

    def user(authorization: str | None = Header(default=None)) -> str:
        scheme, _, key = (authorization or "").partition(" ")
        found = keys.user_for(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
        if found is None:
            why = "no API key" if not authorization else "this API key is not valid"
            raise ServiceError(
                f"{why}: send Authorization: Bearer YOUR_KEY (make one with `headshot user add`)",
                "unauthorized",
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        return found

    @app.post("/v1/models/train", status_code=202, response_model=TrainAccepted, responses=ERRORS)
    def train(body: TrainRequest, user_id: str = Depends(user), idempotency_key: IdempotencyKey = None):
        job, seconds, new = submit_training(config, store, user_id, body, idempotency_key)
        if new:
            queue.enqueue("train", job.id)
        return {"training_job_id": job.id, "status": job.status, "estimated_time": seconds, "model_id": job.model_id}

    @app.post("/v1/images/generate_avatar", status_code=202, response_model=GenerateAccepted, responses=ERRORS)
    def generate(body: GenerateRequest, user_id: str = Depends(user), idempotency_key: IdempotencyKey = None):
        job, new = submit_generation(config, store, user_id, body, idempotency_key)
        if new:
            queue.enqueue("generate", job.id)
        return {"generation_job_id": job.id, "status": job.status}

    @app.get("/v1/jobs/{job_id}", response_model=JobView, responses=ERRORS)
    def get_job(job_id: str, user_id: str = Depends(user)):
        return job_view(store, config, owned_job(store, user_id, job_id))

    @app.post("/v1/jobs/{job_id}/cancel", response_model=CancelView, responses=ERRORS)
    def cancel(job_id: str, user_id: str = Depends(user)):
        job = owned_job(store, user_id, job_id)
        if job.status == "queued":  # never claimed now: the worker skips it
            store.finish(job.id, "cancelled", "cancelled", "cancelled at your request")
            drop_reference(config, job.id)  # a one-photo job's photo goes with it
        elif job.status == "running":  # the worker stops at its next heartbeat (training saves a checkpoint)
            store.update_job(job.id, cancel_requested=True)
        fresh = owned_job(store, user_id, job_id)
        return {"job_id": job_id, "status": fresh.status, "cancel_requested": job.status in ("queued", "running")}

    @app.delete("/v1/jobs/{job_id}", response_model=JobErased, responses=ERRORS)
    def delete_job(job_id: str, user_id: str = Depends(user)):
        return erase_job(config, store, owned_job(store, user_id, job_id))

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS)
    def list_models(user_id: str = Depends(user)):
        with store.session() as s:
            models = s.scalars(select(Model).where(Model.user_id == user_id).order_by(Model.created)).all()
        return {"models": [model_view(config, m) for m in models]}

    @app.get("/v1/models/{model_id}", response_model=ModelView, responses=ERRORS)
    def get_model(model_id: str, user_id: str = Depends(user)):
        return model_view(config, owned_model(store, user_id, model_id))

    @app.get("/v1/models/{model_id}/lora", response_class=FileResponse, responses=ERRORS)
    def download_lora(model_id: str, user_id: str = Depends(user)):
        model = owned_model(store, user_id, model_id)
        path = config.data_dir / model.lora if model.lora else None
        if path is None or not path.is_file():
            raise ServiceError(f"model {model_id} has no LoRA yet (status {model.status})", "not_found", 404)
        return FileResponse(path, media_type="application/octet-stream", filename=f"{model.instance_name}.safetensors")

    @app.delete("/v1/models/{model_id}", response_model=Erased, responses=ERRORS)
    def delete_model(model_id: str, user_id: str = Depends(user)):
        owned_model(store, user_id, model_id)
        return erase_model(config, store, model_id)

    @app.get("/v1/styles", response_model=StyleList, responses=ERRORS)
    def styles(user_id: str = Depends(user)):
        from ..generate.styles import load_styles

        found = load_styles([*config.style_dirs]).values()
        return {"styles": [{"name": s.name, "title": s.title, "category": s.category} for s in found]}

    @app.get("/v1/images/{image_id}", response_class=FileResponse, responses=ERRORS)
    def image(image_id: str, user_id: str = Depends(user)):
        with store.session() as s:
            picture = s.get(Picture, image_id)
        path = config.data_dir / picture.path if picture is not None and picture.user_id == user_id else None
        if path is None or not path.is_file() or Path(config.data_dir).resolve() not in path.resolve().parents:
            raise ServiceError(f"no image {image_id[:80]!r} of yours", "not_found", 404)
        return FileResponse(path, media_type="image/png")

    add_page(app, config, store, user)  # the page at / and the calls only it needs
    app.add_middleware(BodyLimit, limit=config.limits.max_body_bytes)
    return app
