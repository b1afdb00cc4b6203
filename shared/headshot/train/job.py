"""Job folders: the durable record of a training run, and the worker process that fills it.

A job folder alone tells what happened:
  job.json          state (queued/running/done/failed/cancelled), settings, steps done, chosen
                    checkpoint, paths — rewritten atomically
  events.jsonl      one JSON event a line: step, checkpoint, sample, validation, error, done …
  loss.csv          step,loss,lr
  loss.png          the loss curve, redrawn as training goes
  checkpoints/      step-NNNNNN/ with lora.safetensors (usable as is), state.safetensors and
                    state.json (to resume; data only, see checkpoint_state)
  worker.log        the worker's own output
  CANCEL            present when a cancel was asked for
  .headshot.lock    held by the one process writing the folder (the worker, or whoever creates it)

job.json is data: paths are derived from where the folder is now and from the caller, never
followed from the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import HeadshotError
from ..outputs import FolderBusy, FolderLock, OutputManifest, atomic_write_json, pid_alive
from . import checkpoint_state

#: what a job writes at its top level and in each checkpoint; a failed start removes these and nothing else
OWN_FILES = ("job.json", "events.jsonl", "loss.csv", "loss.png", "worker.log", "validation.json", "CANCEL")
OWN_CHECKPOINT_FILES = (
    "lora.safetensors",
    checkpoint_state.TENSORS_NAME,
    checkpoint_state.STATE_NAME,
    checkpoint_state.LEGACY_NAME,
)
OWN_SD_SCRIPTS_FILES = ("dataset.toml", "sd-scripts.toml", "sd-scripts.log")


class Cancelled(Exception):
    """The person asked to stop; the checkpoint at `step` (args[0]) is saved and usable."""


class JobFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.stop_reason: str | None = None  # set in the worker by a signal or a vanished parent

    def lock(self) -> FolderLock:
        return FolderLock(self.path, "training job")

    # -- the record -----------------------------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return self.path / "job.json"

    def exists(self) -> bool:
        return self.record_path.is_file()

    def read(self) -> dict:
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HeadshotError(f"{self.path} holds no training job (no job.json)", "no_job") from None
        except (ValueError, OSError) as exc:
            raise HeadshotError(
                f"{self.record_path} is damaged ({exc}); choose another --out folder", "job_damaged"
            ) from None
        if not isinstance(record, dict):
            raise HeadshotError(f"{self.record_path} is not a job record; choose another --out folder", "job_damaged")
        return record

    def write(self, record: dict) -> None:
        """Atomic: a reader (or a kill mid-write) never sees half a file."""
        atomic_write_json(self.record_path, record)

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

    def request_stop(self, reason: str) -> None:
        """In this process only (safe in a signal handler): stop after saving, like a cancel."""
        self.stop_reason = self.stop_reason or reason

    def cancel_requested(self) -> bool:
        return self.stop_reason is not None or self.cancel_path.exists()

    # -- liveness -------------------------------------------------------------------------------
    def busy(self, holding_lock: bool = False) -> bool:
        """Some other live process writes this folder: it holds the lock, or its worker is starting
        (the starter hands the lock to the worker). `holding_lock`: the caller holds it itself."""
        if not holding_lock:
            lock = self.lock()
            try:
                lock.acquire()
            except FolderBusy:
                return True
            lock.release()
        record = self.read() if self.exists() else {}
        pid = record.get("worker_pid")
        return (
            record.get("state") in ("queued", "running")
            and pid != os.getpid()
            and isinstance(pid, int)
            and pid_alive(pid)
        )

    def status(self, holding_lock: bool = False) -> dict:
        """The record, with a job left queued/running by a process that is gone repaired to a resumable failure."""
        record = self.read()
        if record.get("state") not in ("queued", "running") or self.busy(holding_lock):
            return record
        checkpoints = self.checkpoints()
        hint = (
            f"resume with --resume to continue from step {checkpoints[-1][0]}"
            if checkpoints
            else "start it again (no step was saved)"
        )
        return self.update(
            state="failed",
            error_code="interrupted",
            error=f"the training process (pid {record.get('worker_pid') or '?'}) stopped without finishing; {hint}",
        )

    def lora_path(self, record: dict) -> Path | None:
        """The finished LoRA, found in this folder wherever it has moved (the record's path is not followed)."""
        name = Path(str(record.get("lora") or "")).name
        return self.path / name if name.endswith(".safetensors") else None

    def remove_own_files(self) -> None:
        """Clear what a job wrote (a failed start), leaving anything else in the folder alone."""
        for name in OWN_FILES:
            (self.path / name).unlink(missing_ok=True)
            for tmp in self.path.glob(f".{Path(name).stem}.*.tmp*"):
                tmp.unlink(missing_ok=True)  # an atomic write of it cut short
        for folder, names in [(d, OWN_CHECKPOINT_FILES) for d in self._step_dirs()] + [
            (self.path / "sd-scripts", OWN_SD_SCRIPTS_FILES)
        ]:
            for name in names:
                (folder / name).unlink(missing_ok=True)
            for tmp in folder.glob(".*.tmp*") if folder.is_dir() else []:
                tmp.unlink(missing_ok=True)  # an atomic write cut short
            _remove_if_empty(folder)
        _remove_if_empty(self.checkpoints_dir)
        manifest = OutputManifest(self.path)  # names claimed for outputs never written: free them again
        manifest.forget_missing()
        manifest.save() if manifest.files else manifest.path.unlink(missing_ok=True)

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def _step_dirs(self) -> list[Path]:
        if not self.checkpoints_dir.is_dir():
            return []
        return [d for d in self.checkpoints_dir.iterdir() if d.name.startswith("step-") and d.name[5:].isdigit()]

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (state.json, written last, marks them whole), oldest first."""
        return sorted(
            (int(d.name[5:]), d)
            for d in self._step_dirs()
            if checkpoint_state.is_complete(d) and (d / "lora.safetensors").is_file()
        )

    def legacy_checkpoints(self) -> list[tuple[int, Path]]:
        """Checkpoints of an older version (a pickled state.pt): never loaded, only reported."""
        return sorted((int(d.name[5:]), d) for d in self._step_dirs() if checkpoint_state.is_legacy(d))


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # absent, or holds something that is not ours


def start_worker(job: JobFolder, python: str | None = None) -> subprocess.Popen:
    """Run the training worker for `job` in its own process; output goes to worker.log.

    Its stdin is a pipe we never write to: when this process ends, however it ends, the worker reads
    end-of-file, saves a checkpoint and exits (no orphan trains on). A pipe, not PR_SET_PDEATHSIG, because
    that fires when the starting *thread* ends, and hosts start training from worker threads.
    """
    env = dict(os.environ)
    core = str(Path(__file__).resolve().parents[2])  # shared/, so a host's Python finds `headshot`
    env["PYTHONPATH"] = core + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[PARENT_PIPE_ENV] = "1"
    with open(job.path / "worker.log", "ab") as log:
        return subprocess.Popen(
            [python or sys.executable, "-m", "headshot.train.worker", str(job.path)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


PARENT_PIPE_ENV = "HEADSHOT_WORKER_PARENT_PIPE"


def watch_parent(job: JobFolder) -> None:
    """In the worker: ask for a stop (checkpoint, then exit) once the starting process has gone."""
    if os.environ.get(PARENT_PIPE_ENV) != "1":
        return

    def wait_for_eof():
        # the raw descriptor, not sys.stdin.buffer: a daemon thread blocked inside the buffered reader holds
        # its lock, and the interpreter's shutdown then aborts the finished worker (SIGABRT, "Fatal Python error")
        try:
            while os.read(sys.stdin.fileno(), 4096):
                pass
        except (OSError, ValueError):
            pass
        job.request_stop("the command that started training has ended")

    threading.Thread(target=wait_for_eof, name="parent-watch", daemon=True).start()


def hold_lock(job: JobFolder, wait: float = 30.0) -> FolderLock:
    """The worker's lock on its folder, for its whole life. The starting process releases it just after
    the worker starts, so wait a little; someone else holding it longer is another writer."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return job.lock().acquire()
        except FolderBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def follow(
    job: JobFolder, process: subprocess.Popen | None, on_event: Callable[[dict], None], poll: float = 0.5
) -> dict:
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
        if process is None and job.status().get("state") not in ("queued", "running"):
            break
        time.sleep(poll)
    record = job.read()
    if process is not None and process.returncode != 0 and record.get("state") in ("done", "cancelled"):
        # it recorded its end, then did not exit cleanly (a crash at shutdown, say in a GPU driver's teardown):
        # what it wrote stands, but such a crash is worth seeing: told now, and kept in the record for the hosts'
        # summaries (ComfyUI's node and the A1111 tab show the record, not the events)
        message = (
            f"the worker process ended with exit code {process.returncode} after recording the job "
            f"as {record['state']}; its outputs are as recorded (see worker.log in {job.path})"
        )
        record = job.update(worker_exit_warning=message)
        on_event({"type": "warning", "message": message})
    if process is not None and process.returncode != 0 and record.get("state") in ("queued", "running"):
        # killed from outside (OOM killer, kill -9): say so, the last checkpoint stays resumable
        record = job.update(
            state="failed",
            error=f"the worker process stopped (exit code {process.returncode}); "
            "resume with --resume to continue from the last checkpoint",
        )
    return record
