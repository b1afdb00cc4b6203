"""The training worker process: `python -m headshot.train.worker JOB_DIR`.

It reads the settings from JOB_DIR/job.json, trains, and records everything in the job folder.
SIGTERM (or a CANCEL file) stops it after saving a checkpoint.
"""
from __future__ import annotations

import signal
import sys
import traceback

from ..errors import HeadshotError
from .job import Cancelled, JobFolder
from .settings import TrainSettings


def run_job(job: JobFolder) -> int:
    settings = TrainSettings.from_dict(job.read()["settings"])
    try:
        if settings.backend == "sd-scripts":
            from .sd_scripts_job import run_sd_scripts_job

            result = run_sd_scripts_job(settings, job)
        else:
            from .engine import LoraTrainer

            result = LoraTrainer(settings, job).run()
    except Cancelled as exc:
        step = exc.args[0] if exc.args else None
        job.update(state="cancelled", steps_done=step)
        job.emit("cancelled", step=step, message=f"stopped at step {step}; the last checkpoint is usable")
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
    job.update(state="done", lora=result["lora"], chosen_step=result["chosen_step"], choice=result["choice"],
               identity=result.get("identity"))
    job.emit("done", **result)
    return 0


def _friendly(exc: Exception) -> str:
    text = str(exc)
    if "out of memory" in text.lower():
        return ("the GPU ran out of memory: use --preset fast, a lower --rank or --resolution, or close other "
                f"programs using the GPU ({text.splitlines()[0]})")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return f"the disk is full while writing the job folder: free some space, then --resume ({text})"
    return f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m headshot.train.worker JOB_DIR", file=sys.stderr)
        return 2
    job = JobFolder(argv[0])
    signal.signal(signal.SIGTERM, lambda *_: job.request_cancel())
    return run_job(job)


if __name__ == "__main__":
    sys.exit(main())
