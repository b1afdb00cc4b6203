"""Worker processes: each runs one huey consumer (one job at a time, the base model kept loaded), and every
half minute sends back to the queue the jobs whose worker died. `headshot worker` runs one on a GPU
machine; `headshot serve --workers N` starts N beside the API and stops them with it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from .config import Limits, ServiceConfig

CONFIG_ENV = "HEADSHOT_SERVICE_CONFIG"
PARENT_ENV = "HEADSHOT_SERVICE_PARENT"
RECOVER_EVERY_S = 30.0


def config_to_json(config: ServiceConfig) -> str:
    return json.dumps(asdict(config), default=str)


def config_from_json(text: str) -> ServiceConfig:
    data = json.loads(text)
    data["data_dir"] = Path(data["data_dir"])
    data["limits"] = Limits(**data["limits"])
    for key in ("face_model_dirs", "tokenizer_dirs", "style_dirs", "adapter_dirs"):
        data[key] = tuple(data[key])
    return ServiceConfig(**data)


def run_worker(config: ServiceConfig) -> None:
    """One consumer in this process, until SIGTERM/SIGINT (or the serve process that started it is gone)."""
    from .db import Store
    from .runner import recover
    from .tasks import JobQueue

    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    store = Store(config.database)
    queue = JobQueue(config, store)
    _watch_parent()

    def recover_now_and_then() -> None:
        while True:
            try:
                recover(config, store, queue.enqueue, queued_too=False)
            except Exception:
                logging.getLogger("headshot.service").exception("recovery failed")
            time.sleep(RECOVER_EVERY_S)

    threading.Thread(target=recover_now_and_then, name="recover", daemon=True).start()
    consumer = queue.huey.create_consumer(workers=1, worker_type="thread", max_delay=1.0, periodic=False)
    consumer.run()


def _watch_parent() -> None:
    """A worker started by `headshot serve` ends when serve ends, however it ends (kill -9 included): a job it
    was running is resumed by the next start, never trained twice at once."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os._exit(3)  # the training process it started saves a checkpoint when its pipe closes

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def start_workers(config: ServiceConfig, count: int, log_path: Path) -> list[subprocess.Popen]:
    env = dict(os.environ)
    core = str(Path(__file__).resolve().parents[2])  # shared/, so the worker finds `headshot` as we did
    env["PYTHONPATH"] = core + os.pathsep + env.get("PYTHONPATH", "")
    env[CONFIG_ENV] = config_to_json(config)
    env[PARENT_ENV] = str(os.getpid())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    processes = []
    for _ in range(count):
        with open(log_path, "ab") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "headshot.service.worker"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
    return processes


def stop_workers(processes: list[subprocess.Popen], grace: float = 30.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()  # huey finishes nothing new; a training job saves a checkpoint and is resumed later
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> int:
    text = os.environ.get(CONFIG_ENV)
    if not text:
        print(f"{CONFIG_ENV} is not set: start workers with `headshot worker` or `headshot serve`", file=sys.stderr)
        return 2
    run_worker(config_from_json(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
