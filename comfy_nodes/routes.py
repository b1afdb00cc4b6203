"""HTTP routes on ComfyUI's server for training jobs (ComfyUI also serves them under /api/...).

GET  /headshot/jobs                -> {"jobs": [{"name", "state", "steps_done", "lora"}, ...]}
GET  /headshot/jobs/{name}         -> {"name", "job": <job.json>, "events": [the last `events` events]}
                                      (?events=N, default 50, clamped to 0..1000)
POST /headshot/jobs/{name}/cancel  -> {"name", "cancel_requested": true, "state"}; the worker saves a
                                      checkpoint and stops, and the job resumes when run again
                                      (cancel_requested false, with a message, when it is not running)
A job's name is its folder name under <headshot_jobs>/jobs/ (Train Identity LoRA's summary shows it).
"""

from __future__ import annotations

from . import host

DEFAULT_EVENTS = 50
MAX_EVENTS = 1000


class JobNotFound(LookupError):
    pass


def jobs_dir():
    return host.jobs_root() / "jobs"


def job_folder(name: str):
    """The job called `name`; ValueError for a name that is not a plain folder name."""
    from headshot.errors import HeadshotError
    from headshot.outputs import safe_name
    from headshot.train.job import JobFolder

    try:
        safe_name(name, "job name")
    except HeadshotError as exc:
        raise ValueError(str(exc)) from None
    folder = jobs_dir() / name
    if folder.is_symlink():  # a link planted under jobs/ must not expose another folder
        raise JobNotFound(f"no training job called {name!r}")
    job = JobFolder(folder)
    if not job.exists():
        raise JobNotFound(f"no training job called {name!r}")
    return job


def list_jobs() -> dict:
    from headshot.train.job import JobFolder

    jobs = []
    if jobs_dir().is_dir():
        for folder in sorted(p for p in jobs_dir().iterdir() if p.is_dir() and not p.is_symlink()):
            job = JobFolder(folder)
            if job.exists():
                record = job.read()
                jobs.append(
                    {
                        "name": folder.name,
                        "state": record.get("state"),
                        "steps_done": record.get("steps_done"),
                        "lora": record.get("lora"),
                    }
                )
    return {"jobs": jobs}


def event_count(value) -> int:
    """?events=N as a count in 0..MAX_EVENTS (negative: none; not a number: the default)."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        return DEFAULT_EVENTS
    return max(0, min(count, MAX_EVENTS))


def job_status(name: str, events: int = DEFAULT_EVENTS) -> dict:
    job = job_folder(name)
    count = event_count(events)
    found, _ = job.events(0)
    return {"name": name, "job": job.read(), "events": found[-count:] if count else []}


def cancel_job(name: str) -> dict:
    """Ask a queued or running job to stop; a finished, failed or cancelled one is left as it is."""
    job = job_folder(name)
    state = job.read().get("state")
    if state not in ("queued", "running"):
        return {
            "name": name,
            "cancel_requested": False,
            "state": state,
            "message": f"the job is {state}: there is nothing to cancel",
        }
    job.request_cancel()
    return {"name": name, "cancel_requested": True, "state": state}


def register_routes() -> bool:
    """Add the routes to ComfyUI's PromptServer; False (nothing done) when it is not there."""
    server = host.module("server")
    prompt_server = getattr(server, "PromptServer", None) if server is not None else None
    instance = getattr(prompt_server, "instance", None)
    if instance is None:
        return False
    routes = instance.routes

    def answer(call, *args):
        from aiohttp import web

        try:
            return web.json_response(call(*args))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except JobNotFound as exc:
            return web.json_response({"error": str(exc)}, status=404)

    @routes.get("/headshot/jobs")
    async def get_jobs(request):
        return answer(list_jobs)

    @routes.get("/headshot/jobs/{name}")
    async def get_job(request):
        count = event_count(request.rel_url.query.get("events", DEFAULT_EVENTS))
        return answer(job_status, request.match_info["name"], count)

    @routes.post("/headshot/jobs/{name}/cancel")
    async def post_cancel(request):
        return answer(cancel_job, request.match_info["name"])

    return True
