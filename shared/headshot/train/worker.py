"""The training worker process: `python -m headshot.train.worker JOB_DIR`.

It reads the settings from JOB_DIR/job.json, trains, and records everything in the job folder,
holding the folder's lock for its whole life. SIGINT (Ctrl-C reaches the whole process group),
SIGTERM, SIGHUP, a CANCEL file, or the end of the process that started it: each stops it after
saving a checkpoint.
"""

from __future__ import annotations

import signal
import sys
import traceback

from ..errors import HeadshotError
from .job import Cancelled, JobFolder, hold_lock, watch_parent
from .settings import TrainSettings

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def run_job(job: JobFolder) -> int:
    try:
        # the folder is where it is now: out_dir is never followed from job.json
        settings = TrainSettings.from_dict({**job.read()["settings"], "out_dir": str(job.path)})
        settings.validate()
        if settings.backend == "sd-scripts":
            from .sd_scripts_job import run_sd_scripts_job

            result = run_sd_scripts_job(settings, job)
        else:
            from .engine import LoraTrainer

            result = LoraTrainer(settings, job).run()
    except Cancelled as exc:
        step = exc.args[0] if exc.args else None
        why = job.stop_reason or "cancel requested"
        job.update(state="cancelled", steps_done=step, stopped_because=why)
        job.emit("cancelled", step=step, message=f"stopped at step {step} ({why}); the last checkpoint is usable")
        return 0
    except HeadshotError as exc:
        job.update(state="failed", error=str(exc), error_code=exc.code)
        job.emit("error", message=str(exc), code=exc.code)
        return 1
    except Exception as exc:  # a bug or an environment problem: keep the whole story in the job folder
        detail = traceback.format_exc()
        message = _friendly(exc)
        job.update(state="failed", error=message, traceback=detail)
        job.emit("error", message=message, traceback=detail)
        return 1
    job.update(
        state="done",
        lora=result["lora"],
        chosen_step=result["chosen_step"],
        choice=result["choice"],
        identity=result.get("identity"),
    )
    job.emit("done", **result)
    return 0


def _friendly(exc: Exception) -> str:
    text = str(exc)
    if "out of memory" in text.lower():
        return (
            "the GPU ran out of memory: use --preset fast, a lower --rank or --resolution, or close other "
            f"programs using the GPU ({text.splitlines()[0]})"
        )
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return f"the disk is full while writing the job folder: free some space, then --resume ({text})"
    return f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m headshot.train.worker JOB_DIR", file=sys.stderr)
        return 2
    job = JobFolder(argv[0])
    for sig in STOP_SIGNALS:  # first thing: a Ctrl-C must save, not raise KeyboardInterrupt mid-step
        signal.signal(sig, lambda signum, frame: job.request_stop(f"{signal.Signals(signum).name} received"))
    watch_parent(job)
    try:
        lock = hold_lock(job)
    except HeadshotError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)  # another writer has the folder: touch nothing
        return 1
    try:
        return run_job(job)
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
