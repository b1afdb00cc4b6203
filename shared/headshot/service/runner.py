"""Running one job in a worker: claim it, count the try, keep a heartbeat, record how it ended, call the webhook;
and finding jobs whose worker died (re-queued to resume, or failed after the last try)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from typing import Callable

from sqlalchemy import select

from ..errors import HeadshotError
from ..outputs import pid_alive
from .config import ServiceConfig
from .db import Job, Model, Store, User
from .erasure import drop_reference
from .views import job_view
from .webhooks import deliver

log = logging.getLogger("headshot.service")

Work = Callable[[Job, "Heartbeat"], dict]
Enqueue = Callable[[str, str], None]  # (kind, job id)


class JobCancelled(Exception):
    """The person cancelled (or erased the model) while the job ran."""


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """A thread that stamps the job as alive and notices a cancel asked for through the API."""

    def __init__(self, store: Store, job_id: str, every: float):
        self.store, self.job_id, self.every = store, job_id, every
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def check(self) -> None:
        """Raise JobCancelled when a cancel was asked for (between steps of the work)."""
        if self.cancelled.is_set():
            raise JobCancelled()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.job(self.job_id)
                if job is None or job.cancel_requested:
                    self.cancelled.set()
                self.store.update_job(self.job_id, heartbeat=time.time())
            except Exception:  # the database restarting must not end the job; the next beat tries again
                log.exception("heartbeat of %s failed", self.job_id)
            self._stop.wait(self.every)


def run_job(config: ServiceConfig, store: Store, job_id: str, work: Work, enqueue: Enqueue) -> None:
    job = store.claim(job_id, this_worker())
    if job is None:
        return  # not queued any more: cancelled, taken by another worker, or a duplicate message
    if job.attempts > config.max_attempts:
        tries = job.attempts - 1
        _end(config, store, job_id, "failed", "gave_up", f"failed after {tries} tries: {job.error_message}")
        return
    try:
        with Heartbeat(store, job_id, config.heartbeat_s) as beat:
            result = work(job, beat)
    except JobCancelled:
        _end(config, store, job_id, "cancelled", "cancelled", "cancelled at your request")
    except HeadshotError as exc:  # the input or settings: another try would fail the same way
        _end(config, store, job_id, "failed", exc.code, str(exc))
    except Exception as exc:  # a crash (memory, a bug, the disk): try again, up to the limit
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}"
        if job.attempts < config.max_attempts:
            store.requeue(job_id, "job_crashed", message)
            enqueue(job.kind, job_id)
        else:
            _end(config, store, job_id, "failed", "job_crashed", f"failed after {job.attempts} tries: {message}")
    else:
        _end(config, store, job_id, "succeeded", None, None, result)


def _end(config, store: Store, job_id: str, status: str, code, message, result: dict | None = None) -> None:
    import json

    fields = {"result": json.dumps(result)} if result is not None else {}
    store.finish(job_id, status, code, message, **fields)
    job = store.job(job_id)
    if job is not None and job.kind == "generate":
        drop_reference(config, job_id)  # a one-photo job's photo is not kept, however the job ended
    if job is not None and job.kind == "train" and status != "succeeded":
        with store.session() as s:  # the model this job was making will not come
            model = s.get(Model, job.model_id)
            if model is not None and model.status == "training":
                model.status = status
    notify(config, store, job_id)


def notify(config: ServiceConfig, store: Store, job_id: str) -> None:
    job = store.job(job_id)
    if job is None or not job.webhook_url:
        return
    with store.session() as s:
        user = s.get(User, job.user_id)
    if user is not None and not deliver(
        job.webhook_url, user.webhook_secret, job_view(store, config, job), allow_private=config.private_webhooks
    ):
        log.warning("webhook %s for job %s was not answered with 2xx", job.webhook_url, job_id)


def worker_gone(job: Job, config: ServiceConfig, now: float) -> bool:
    """The job's worker is known dead (a process of this machine that is gone) or silent too long."""
    host, _, pid = (job.worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        return True
    return job.heartbeat is None or now - job.heartbeat > config.stale_after_s


def recover(config: ServiceConfig, store: Store, enqueue: Enqueue, queued_too: bool = True) -> list[str]:
    """Jobs left running by a dead worker go back to the queue (they resume from their checkpoint, and the next
    claim counts the try); with `queued_too`, queued jobs are sent again (a duplicate is ignored at claim)."""
    now = time.time()
    with store.session() as s:
        running = list(s.scalars(select(Job).where(Job.status == "running")))
        queued = list(s.scalars(select(Job).where(Job.status == "queued"))) if queued_too else []
    again = []
    for job in running:
        if worker_gone(job, config, now):
            store.requeue(job.id, "worker_lost", f"the worker ({job.worker}) stopped while running this job")
            again.append(job)
    for job in again + queued:
        enqueue(job.kind, job.id)
    return [job.id for job in again]
