"""The queue (huey: SQLite under --data by default, Redis for many machines) and the two tasks on it.

The tasks carry only a job id: everything else is read from the database, so a message sent twice or
after a restart is harmless (a job runs only when it can be claimed from "queued").
"""

from __future__ import annotations

from typing import Callable

from .config import ServiceConfig
from .db import Store

TASK_NAMES = {"train": "headshot.train", "generate": "headshot.generate"}
SWEEP_TASK = "headshot.sweep_run"  # one run of `headshot sweep --queue` (no job record: the sweep folder is its record)


def make_huey(config: ServiceConfig):
    from huey import RedisHuey, SqliteHuey

    url = config.queue_url
    if url and url.startswith(("redis://", "rediss://")):
        return RedisHuey("headshot", url=url, results=False)
    filename = url[len("sqlite:///") :] if url else str(config.data_dir / "queue.db")
    return SqliteHuey("headshot", filename=filename, results=False)


class JobQueue:
    """The huey instance with the tasks registered, and `enqueue(kind, job_id)` for the API and recovery."""

    def __init__(self, config: ServiceConfig, store: Store):
        from .generation_task import generate_pictures
        from .runner import run_job
        from .training_task import train_model

        self.config, self.store = config, store
        self.huey = make_huey(config)
        work = {"train": train_model, "generate": generate_pictures}
        self._tasks: dict[str, Callable] = {}
        for kind, name in TASK_NAMES.items():

            def task(job_id: str, kind: str = kind) -> None:
                run_job(config, store, job_id, lambda job, beat: work[kind](config, store, job, beat), self.enqueue)

            self._tasks[kind] = self.huey.task(name=name)(task)
        self.sweep_run = sweep_task(self.huey)

    def enqueue(self, kind: str, job_id: str) -> None:
        self._tasks[kind](job_id)

    def pending(self) -> int:
        return self.huey.pending_count()


def _sweep_run(message: dict) -> None:
    from ..sweep.queued import run_queued_task

    run_queued_task(message)


def sweep_task(huey) -> Callable:
    """The sweep-run task on `huey`: workers register it to run it, `headshot sweep --queue` to send it."""
    return huey.task(name=SWEEP_TASK)(_sweep_run)
