"""The training jobs under one jobs root, as a host shows them: the list, one job's status, cancelling.

A job's name is its folder name under `<jobs_root>/jobs/` (job_reuse.job_folder names them). Names come
from people and requests, so each is checked as a plain folder name, and a link planted under jobs/ is
never followed. States come from JobFolder.status(), so a job whose worker has gone shows as the
resumable failure it is rather than running forever.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HeadshotError
from ..outputs import safe_name
from .job import JobFolder

DEFAULT_EVENTS = 50
MAX_EVENTS = 1000


def jobs_folder(jobs_root: str | Path) -> Path:
    return Path(jobs_root) / "jobs"


def find_job(jobs_root: str | Path, name: str) -> JobFolder:
    """The job called `name`: HeadshotError "bad_name" for a name that is not a plain folder name,
    "not_found" when there is no such job."""
    safe_name(name, "job name")
    folder = jobs_folder(jobs_root) / name
    job = JobFolder(folder)
    if folder.is_symlink() or not job.exists():  # a link under jobs/ must not expose another folder
        raise HeadshotError(
            f"no training job called {name!r}; use a name from the job list (the job's folder name)", "not_found"
        )
    return job


def list_jobs(jobs_root: str | Path) -> list[dict]:
    """Every job under the root, by name: its state, steps done and finished LoRA (None until done)."""
    folder = jobs_folder(jobs_root)
    if not folder.is_dir():
        return []
    jobs = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
        job = JobFolder(path)
        if job.exists():
            record = job.status()
            lora = job.lora_path(record)
            jobs.append(
                {
                    "name": path.name,
                    "state": record.get("state"),
                    "steps_done": record.get("steps_done"),
                    "lora": str(lora) if lora is not None else None,
                }
            )
    return jobs


def event_count(value) -> int:
    """A requested number of events as a count in 0..MAX_EVENTS (negative: none; not a number: the default)."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        return DEFAULT_EVENTS
    return max(0, min(count, MAX_EVENTS))


def job_status(jobs_root: str | Path, name: str, events=DEFAULT_EVENTS) -> dict:
    """The job's record and its last `events` events (clamped: never every event ever written)."""
    job = find_job(jobs_root, name)
    count = event_count(events)
    record = job.status()
    found, _ = job.events(0)
    return {"name": name, "job": record, "events": found[-count:] if count else []}


def cancel_job(jobs_root: str | Path, name: str) -> dict:
    """Ask a queued or running job to stop (its worker saves a checkpoint first, and the job resumes when run
    again); a finished, failed or cancelled one is left as it is."""
    job = find_job(jobs_root, name)
    state = job.status().get("state")
    if state not in ("queued", "running"):
        return {
            "name": name,
            "cancel_requested": False,
            "state": state,
            "message": f"the job is {state}: there is nothing to cancel",
        }
    job.request_cancel()
    return {"name": name, "cancel_requested": True, "state": state}
