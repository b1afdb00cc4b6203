"""Accepting jobs: every check that can fail on the request runs here, before anything is queued, so a bad
request gets its 4xx at once and a queued job fails only for reasons found while working."""

from __future__ import annotations

import hashlib
import json
import shutil

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..errors import HeadshotError
from ..outputs import atomic_write_bytes
from .config import UPLOADS, ServiceConfig
from .db import Job, Model, Store, new_id
from .generation_task import REFERENCE_NAME, one_photo_adapter
from .limits import ServiceError, check_plain_name, check_share, decode_photos, decode_reference
from .schemas import GenerateRequest, TrainRequest
from .training_task import estimated_time, planned_steps_for
from .webhooks import check_webhook_url


def _request_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def earlier_job(store: Store, user_id: str, key: str | None, body_hash: str) -> Job | None:
    """The job an earlier POST with this Idempotency-Key made (the same request sent again), if any."""
    if key is None:
        return None
    if len(key) > 255 or not key.isprintable():
        raise ServiceError("the Idempotency-Key header must be 1–255 printable characters", "bad_option")
    with store.session() as s:
        job = s.scalars(select(Job).where(Job.user_id == user_id, Job.idempotency_key == key)).first()
    if job is not None and job.request_hash != body_hash:
        raise ServiceError(
            "this Idempotency-Key was used for a different request; use a new key for a new request",
            "idempotency_conflict",
            409,
        )
    return job


def _insert(store: Store, rows: list, user_id: str, key: str | None, body_hash: str) -> Job | None:
    """Add the rows; None when a concurrent request with the same Idempotency-Key won (its job is returned)."""
    try:
        with store.session() as s:
            s.add_all(rows)
    except IntegrityError:
        if key is None:
            raise
        return earlier_job(store, user_id, key, body_hash)
    return None


def submit_training(config: ServiceConfig, store: Store, user_id: str, body: TrainRequest, key: str | None):
    """(job, estimated seconds, new?) for a training request."""
    if body.user_id != user_id:
        raise ServiceError("user_id in the body is not the user of this API key", "forbidden", 403)
    request = body.model_dump(exclude={"images"})
    body_hash = _request_hash(body.model_dump())
    options = request.get("training") or {}
    earlier = earlier_job(store, user_id, key, body_hash)
    if earlier is not None:
        return earlier, estimated_time(store, config, earlier.total or 0), False
    check_plain_name(body.instance_name, "instance_name")
    check_plain_name(body.class_type, "class_type")
    check_webhook_url(body.webhook_url, config.private_webhooks)
    if options.get("steps") and options["steps"] > config.limits.max_steps:
        raise ServiceError(f"training.steps {options['steps']}: at most {config.limits.max_steps}", "bad_option")
    check_share(store, user_id, config.limits)
    photos = decode_photos(body.images, config.limits)
    model_id, job_id = new_id("mdl"), new_id("job")
    uploads = config.folder(UPLOADS, model_id)
    for number, (data, extension) in enumerate(photos, 1):
        atomic_write_bytes(uploads / f"photo-{number:02d}{extension}", data, private=True)
    steps = planned_steps_for(options, len(photos))
    model = Model(
        id=model_id,
        user_id=user_id,
        instance_name=body.instance_name,
        class_type=body.class_type,
        trigger=config.trigger,
        base_model=config.base_model,
        training_job_id=job_id,
    )
    job = Job(
        id=job_id,
        user_id=user_id,
        kind="train",
        model_id=model_id,
        request=json.dumps(request),
        total=steps,
        idempotency_key=key,
        request_hash=body_hash,
        webhook_url=body.webhook_url,
    )
    won = _insert(store, [model, job], user_id, key, body_hash)
    if won is not None:
        shutil.rmtree(uploads, ignore_errors=True)  # the photos of the request that lost the race
        return won, estimated_time(store, config, won.total or 0), False
    return job, estimated_time(store, config, steps), True


def submit_generation(config: ServiceConfig, store: Store, user_id: str, body: GenerateRequest, key: str | None):
    """(job, new?) for a generation request."""
    from ..generate.preflight import parse_size
    from ..generate.styles import get_style

    body_hash = _request_hash(body.model_dump())
    earlier = earlier_job(store, user_id, key, body_hash)
    if earlier is not None:
        return earlier, False
    if (body.model_id is None) == (body.reference_image is None):
        raise ServiceError(
            "give exactly one of model_id (a trained model) and reference_image (one photo, base64, drawn with "
            "the identity adapter)",
            "bad_option",
        )
    model_id = ""  # a one-photo job draws with no model
    if body.model_id is not None:
        model = owned_model(store, user_id, body.model_id)
        if model.status != "ready":
            raise ServiceError(
                f"model {model.id} is {model.status}: pictures can be drawn once its training has succeeded",
                "model_not_ready",
                409,
            )
        model_id = model.id
    limits = config.limits
    if body.num_images > limits.max_images:
        raise ServiceError(f"num_images {body.num_images}: ask for 1–{limits.max_images}", "bad_option")
    if (body.width is None) != (body.height is None):
        raise ServiceError("give both width and height, or neither (the style's size)", "bad_option")
    if body.width and body.height:
        parse_size(f"{body.width}x{body.height}", "width x height")
    try:
        get_style(body.style_template, [*config.style_dirs])
    except HeadshotError as exc:
        raise ServiceError(f"{exc} (GET /v1/styles lists them)", exc.code) from None
    check_webhook_url(body.webhook_url, config.private_webhooks)
    reference = None
    if body.reference_image is not None:
        reference = decode_reference(body.reference_image, limits)
        if config.face_backend == "dlib":
            raise ServiceError(
                "one-photo mode is not set up on this server: FaceID needs insightface's ArcFace embedding; "
                "start `headshot serve` with --face-backend insightface (buffalo_l in --face-models)",
                "backend_unavailable",
                409,
            )
        try:  # the server's setup, not the request: 409 naming the file and where it goes
            one_photo_adapter(config)
        except HeadshotError as exc:
            raise ServiceError(f"one-photo mode is not set up on this server: {exc}", exc.code, 409) from None
    check_share(store, user_id, limits)
    request = body.model_dump(exclude={"reference_image"})
    job_id = new_id("job")
    uploads = config.folder(UPLOADS, job_id)
    if reference is not None:  # the photo waits under the job's id; the job record keeps only its name
        data, extension = reference
        request["reference"] = REFERENCE_NAME + extension
        atomic_write_bytes(uploads / request["reference"], data, private=True)
    job = Job(
        id=job_id,
        user_id=user_id,
        kind="generate",
        model_id=model_id,
        request=json.dumps(request),
        total=body.num_images,
        idempotency_key=key,
        request_hash=body_hash,
        webhook_url=body.webhook_url,
    )
    won = _insert(store, [job], user_id, key, body_hash)
    if won is not None:
        shutil.rmtree(uploads, ignore_errors=True)  # the photo of the request that lost the race
        return won, False
    return job, True


def owned_model(store: Store, user_id: str, model_id: str) -> Model:
    """The user's model; another user's is as absent as one that never existed (404, nothing revealed)."""
    model = store.model(model_id)
    if model is None or model.user_id != user_id:
        raise ServiceError(f"no model {model_id[:80]!r} (GET /v1/models lists yours)", "not_found", 404)
    return model


def owned_job(store: Store, user_id: str, job_id: str) -> Job:
    job = store.job(job_id)
    if job is None or job.user_id != user_id:
        raise ServiceError(f"no job {job_id[:80]!r} of yours", "not_found", 404)
    return job
