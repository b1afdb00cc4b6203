"""HTTP routes on ComfyUI's server for training jobs (ComfyUI also serves them under /api/...).

GET  /headshot/jobs                -> {"jobs": [{"name", "state", "steps_done", "lora"}, ...]}
GET  /headshot/jobs/{name}         -> {"name", "job": <job.json>, "events": [the last `events` events]}
                                      (?events=N, default 50, clamped to 0..1000)
POST /headshot/jobs/{name}/cancel  -> {"name", "cancel_requested": true, "state"}; the worker saves a
                                      checkpoint and stops, and the job resumes when run again
                                      (cancel_requested false, with a message, when it is not running)
A job's name is its folder name under <headshot_jobs>/jobs/ (Train Identity LoRA's summary shows it).
The answers are the core's (headshot.train.job_listing); this module turns its error codes into statuses.
"""

from __future__ import annotations

from . import host

#: HTTP status for the error codes a job request can meet; any other error is the server's (500)
STATUS_BY_CODE = {"bad_name": 400, "not_found": 404}


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

        from headshot.errors import HeadshotError

        try:
            return web.json_response(call(host.jobs_root(), *args))
        except HeadshotError as exc:
            return web.json_response({"error": str(exc)}, status=STATUS_BY_CODE.get(exc.code, 500))

    from headshot.train import job_listing

    @routes.get("/headshot/jobs")
    async def get_jobs(request):
        return answer(lambda root: {"jobs": job_listing.list_jobs(root)})

    @routes.get("/headshot/jobs/{name}")
    async def get_job(request):
        count = request.rel_url.query.get("events", job_listing.DEFAULT_EVENTS)
        return answer(job_listing.job_status, request.match_info["name"], count)

    @routes.post("/headshot/jobs/{name}/cancel")
    async def post_cancel(request):
        return answer(job_listing.cancel_job, request.match_info["name"])

    return True
