"""`headshot sweep --queue`: the runs go to the queue of `headshot serve` / `headshot worker`, found as a worker
finds it (its --queue URL, or its --data folder holding the default SQLite queue)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import HeadshotError


def add_queue_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queue",
        metavar="URL_OR_DATA",
        help="hand the runs to `headshot worker`s: the workers' --queue (redis://HOST:PORT/DB, sqlite:///FILE) or "
        "their --data folder (its queue.db); OUT must be on storage the workers see. Default: run here, one by one",
    )


def queue_submit(spec: str):
    """(task message) -> None that puts a sweep run on the queue `spec` names; checked before any model loads."""
    try:
        import huey  # noqa: F401
    except ImportError:
        raise HeadshotError(
            "--queue needs the service's queue library: pip install 'headshot-studio[service]' (huey, redis)",
            "backend_unavailable",
        ) from None
    from ..service.config import ServiceConfig
    from ..service.tasks import make_huey, sweep_task

    if spec.startswith(("redis://", "rediss://", "sqlite:///")):
        config = ServiceConfig(data_dir=Path.cwd(), queue_url=spec)
    else:
        folder = Path(spec).expanduser()
        if not (folder / "queue.db").is_file():
            raise HeadshotError(
                f"--queue {spec}: no queue.db in that folder; give the --data folder of `headshot serve` / "
                "`headshot worker`, or their --queue URL (redis://HOST:PORT/DB or sqlite:///FILE)",
                "bad_option",
            )
        config = ServiceConfig(data_dir=folder.resolve())
    task = sweep_task(make_huey(config))

    def submit(message: dict) -> None:
        task(message)

    return submit
