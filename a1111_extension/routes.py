"""HTTP routes on the WebUI's FastAPI app (script_callbacks.on_app_started), under /headshot/v1/:

POST /headshot/v1/prepare            {"photos_folder", "dataset_name", "trigger", "class_word", "resolution",
                                      "face_backend"} -> {"dataset", "kept", "photos": [{source, status, reason,
                                      message, caption}], "summary"}
POST /headshot/v1/train              {"dataset_name", "checkpoint" (a title from the WebUI's list), "output_name",
                                      "preset", "steps", "rank", "learning_rate", "resolution", "seed",
                                      "validation_images", "face_backend", "resume"} -> {"name", "state"} (202)
GET  /headshot/v1/jobs               -> {"jobs": [{"name", "state", "steps_done", "lora"}, ...]}
GET  /headshot/v1/jobs/{name}        -> {"name", "job": <job.json>, "events": [the last `events`]} (?events=N)
POST /headshot/v1/jobs/{name}/cancel -> {"name", "cancel_requested", "state"}

The job answers are the core's (headshot.train.job_listing), the same fields as the ComfyUI routes. Bodies
are plain JSON objects checked by the core's settings (so the routes work on pydantic 1.10 and 2). A path
in a request must lie inside the WebUI's folders (headshot.allowed_paths). Errors: {"error", "code"}.
"""

from __future__ import annotations

from pathlib import Path

from . import host

PREFIX = "/headshot/v1"
#: HTTP status for the error codes a request can meet; any other HeadshotError is the request's (400)
STATUS_BY_CODE = {
    "not_found": 404,
    "no_dataset": 404,
    "base_model_not_found": 404,
    "path_not_allowed": 403,
    "training_running": 409,
    "nothing_to_resume": 409,
    "folder_busy": 409,
    "host_feature_missing": 503,
}
TRAIN_FIELDS = (
    "output_name",
    "preset",
    "steps",
    "rank",
    "learning_rate",
    "resolution",
    "seed",
    "validation_images",
    "face_backend",
)


def _text(body: dict, key: str, default: str = "") -> str:
    from headshot.errors import HeadshotError

    value = body.get(key, default)
    if not isinstance(value, str):
        raise HeadshotError(f"{key!r} must be a string", "bad_option")
    return value


def _body(body) -> dict:
    from headshot.errors import HeadshotError

    if not isinstance(body, dict):
        raise HeadshotError("the request body must be a JSON object", "bad_option")
    return body


def prepare(body: dict) -> dict:
    from . import photos

    body = _body(body)
    source = photos.typed_folder(_text(body, "photos_folder"), "photos_folder")
    result = photos.prepare(
        source,
        _text(body, "dataset_name", "my_identity"),
        _text(body, "trigger", "ohwx"),
        _text(body, "class_word"),
        int(body.get("resolution", 512)),
        _text(body, "face_backend", "auto"),
    )
    from headshot.dataset.prepare_report import prepare_summary

    return {
        "dataset": str(result.out_dir),
        "kept": len(result.kept),
        "photos": [
            {k: p.as_report().get(k) for k in ("source", "status", "reason", "message", "caption")}
            for p in result.photos
        ],
        "summary": prepare_summary(result),
    }


def train(body: dict) -> dict:
    from . import photos, training

    body = _body(body)
    unknown = sorted(set(body) - {*TRAIN_FIELDS, "dataset_name", "checkpoint", "resume"})
    if unknown:
        from headshot.errors import HeadshotError

        raise HeadshotError(
            f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(TRAIN_FIELDS)}, "
            "dataset_name, checkpoint, resume",
            "unknown_option",
        )
    dataset = photos.dataset_dir(_text(body, "dataset_name"))
    if not dataset.is_dir():
        from headshot.errors import HeadshotError

        raise HeadshotError(f"no dataset {dataset.name!r}: prepare it first (POST {PREFIX}/prepare)", "no_dataset")
    checkpoint = host.checkpoint_file(_text(body, "checkpoint"))
    chosen = training.choices(**{k: body[k] for k in TRAIN_FIELDS if k in body})
    settings = training.build_settings(dataset, checkpoint, chosen)
    training.SESSION.start(settings, dataset, resume=bool(body.get("resume", False)))
    return {"name": Path(settings.out_dir).name, "state": "started"}


def job_status(name: str, events) -> dict:
    """The core's job status; while the tab's session is still setting up this job (building the trainer
    environment on first use takes minutes, before any job folder exists) a "preparing" answer with its
    latest message, so a client polling right after POST train never sees a 404."""
    from headshot.errors import HeadshotError
    from headshot.train import job_listing

    from . import training

    progress = training.SESSION.progress
    this_job = progress.job_dir is not None and progress.job_dir.name == name
    try:
        status = job_listing.job_status(host.jobs_root(), name, events)
    except HeadshotError as exc:
        if exc.code != "not_found" or not this_job:
            raise
        return {"name": name, "job": {"state": progress.state, "message": progress.message}, "events": []}
    if this_job and progress.state == "preparing" and status["job"].get("state") in ("failed", "cancelled"):
        # trying again: until its worker starts the folder still holds the last try's end, which would end a poll
        status["job"] = {**status["job"], "state": progress.state, "message": progress.message}
    return status


def register(app) -> bool:
    """Add the routes to the WebUI's FastAPI `app`; False when FastAPI is not there."""
    try:
        from fastapi import APIRouter, Body
        from fastapi.responses import JSONResponse
    except ImportError:
        return False

    from headshot.errors import HeadshotError
    from headshot.train import job_listing

    def answer(call, *args, status: int = 200):
        try:
            return JSONResponse(call(*args), status_code=status)
        except HeadshotError as exc:
            code = exc.code or "error"
            return JSONResponse({"error": str(exc), "code": code}, status_code=STATUS_BY_CODE.get(code, 400))
        except Exception as exc:  # a bug: an answer, not a dropped connection
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}", "code": "error"}, status_code=500)

    router = APIRouter()

    @router.post(f"{PREFIX}/prepare")
    def post_prepare(body=Body(...)):  # noqa: B008  (FastAPI's way to take a plain JSON body)
        return answer(prepare, body)

    @router.post(f"{PREFIX}/train")
    def post_train(body=Body(...)):  # noqa: B008
        return answer(train, body, status=202)

    @router.get(f"{PREFIX}/jobs")
    def get_jobs():
        return answer(lambda: {"jobs": job_listing.list_jobs(host.jobs_root())})

    @router.get(f"{PREFIX}/jobs/{{name}}")
    def get_job(name: str, events: str = str(job_listing.DEFAULT_EVENTS)):  # the core clamps it
        return answer(job_status, name, events)

    @router.post(f"{PREFIX}/jobs/{{name}}/cancel")
    def post_cancel(name: str):
        return answer(job_listing.cancel_job, host.jobs_root(), name)

    app.include_router(router)
    return True


def on_app_started(demo, app) -> None:
    register(app)
