"""A real `headshot serve` in its own process on 127.0.0.1 (a helper module for the page test and the service
benchmarks, not a test file): a free port, a user made beforehand, wait until it answers, stop it and its
workers at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = "import sys; from headshot.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_user(data_dir: Path, user_id: str) -> str:
    """An API key for `user_id` in the database the server will use (SQLite under data_dir)."""
    from headshot.service.auth import add_user
    from headshot.service.config import ServiceConfig
    from headshot.service.db import Store

    data_dir.mkdir(parents=True, exist_ok=True)
    key, _ = add_user(Store(ServiceConfig(data_dir=data_dir).database), user_id)
    return key


class ServeProcess:
    """`headshot serve --data DATA --base-model MODEL --workers N …` until the `with` block ends."""

    def __init__(self, data_dir: Path, base_model: Path, workers: int = 1, extra: list[str] | None = None):
        self.data_dir, self.port = Path(data_dir), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "serve.log"
        self.command = [sys.executable, "-c", CLI, "serve", "--data", str(data_dir), "--base-model", str(base_model)]
        self.command += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        self.command += ["--device", "cpu", "--face-backend", "dlib", *(extra or [])]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "shared") + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"headshot serve ended at start:\n{self.log()}")
            try:
                if httpx.get(self.url + "/openapi.json", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"headshot serve did not answer within 90 s:\n{self.log()}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn stops, then serve stops its workers
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self, tail: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        workers = self.data_dir / "logs" / "workers.log"
        if workers.exists():
            text += "\n--- workers.log ---\n" + workers.read_text(errors="replace")
        return text[-tail:]
