"""Job folders: the durable record of a training run, and the worker process that fills it.

A job folder alone tells what happened:
  job.json          state (queued/running/done/failed/cancelled), settings, steps done, chosen
                    checkpoint, paths — rewritten atomically
  events.jsonl      one JSON event a line: step, checkpoint, sample, validation, error, done …
  loss.csv          step,loss,lr
  loss.png          the loss curve, redrawn as training goes
  checkpoints/      step-NNNNNN/ with lora.safetensors (usable as is) and state.pt (to resume)
  worker.log        the worker's own output
  CANCEL            present when a cancel was asked for
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ..errors import HeadshotError

STATES = ("queued", "running", "done", "failed", "cancelled")


class Cancelled(Exception):
    """The person asked to stop; the checkpoint at `step` (args[0]) is saved and usable."""


class JobFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- the record -----------------------------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return self.path / "job.json"

    def exists(self) -> bool:
        return self.record_path.is_file()

    def read(self) -> dict:
        try:
            return json.loads(self.record_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HeadshotError(f"{self.path} holds no training job (no job.json)", "no_job") from None

    def write(self, record: dict) -> None:
        """Atomic: a reader (or a kill mid-write) never sees half a file."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.record_path)

    def update(self, **fields) -> dict:
        record = self.read()
        record.update(fields)
        record["updated_at"] = time.time()
        self.write(record)
        return record

    # -- events ---------------------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    def emit(self, type: str, **fields) -> dict:
        event = {"type": type, "time": round(time.time(), 3), **fields}
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")
        return event

    def events(self, offset: int = 0) -> tuple[list[dict], int]:
        """Complete event lines from byte `offset` on, and the offset to continue from."""
        if not self.events_path.exists():
            return [], offset
        with open(self.events_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        lines = data[:end].decode("utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()], offset + end

    # -- cancel ---------------------------------------------------------------------------------
    @property
    def cancel_path(self) -> Path:
        return self.path / "CANCEL"

    def request_cancel(self) -> None:
        self.cancel_path.touch()

    def cancel_requested(self) -> bool:
        return self.cancel_path.exists()

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (a state file written last marks them whole), oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for d in self.checkpoints_dir.iterdir():
            if d.name.startswith("step-") and (d / "state.pt").is_file() and (d / "lora.safetensors").is_file():
                found.append((int(d.name[5:]), d))
        return sorted(found)


def start_worker(job: JobFolder, python: str | None = None) -> subprocess.Popen:
    """Run the training worker for `job` in its own process; output goes to worker.log."""
    log = open(job.path / "worker.log", "ab")
    env = dict(os.environ)
    core = str(Path(__file__).resolve().parents[2])  # shared/, so a host's Python finds `headshot`
    env["PYTHONPATH"] = core + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.Popen(
        [python or sys.executable, "-m", "headshot.train.worker", str(job.path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def follow(job: JobFolder, process: subprocess.Popen | None, on_event: Callable[[dict], None], poll: float = 0.5) -> dict:
    """Pass every new event to `on_event` until the worker exits; returns the final record."""
    offset = 0
    while True:
        events, offset = job.events(offset)
        for event in events:
            on_event(event)
        if process is not None and process.poll() is not None:
            events, offset = job.events(offset)
            for event in events:
                on_event(event)
            break
        if process is None and job.read().get("state") not in ("queued", "running"):
            break
        time.sleep(poll)
    record = job.read()
    if process is not None and process.returncode != 0 and record.get("state") == "running":
        # killed from outside (OOM killer, kill -9): say so, the last checkpoint stays resumable
        record = job.update(state="failed", error=f"the worker process stopped (exit code {process.returncode}); "
                            "resume with --resume to continue from the last checkpoint")
    return record

