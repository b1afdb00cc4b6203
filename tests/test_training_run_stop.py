"""TrainingRun.stop: what a host's Cancel does. Real processes play the worker: one that saves and exits
when the CANCEL file appears (as the worker does), and one stuck past the grace time."""

from __future__ import annotations

import subprocess
import sys

from headshot.train.job import JobFolder
from headshot.train.launch import TrainingRun

OBEYS_CANCEL = """
import json, pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
while not (folder / "CANCEL").exists():
    time.sleep(0.05)
record = json.loads((folder / "job.json").read_text())
(folder / "job.json").write_text(json.dumps({**record, "state": "cancelled"}))
"""


def _run(tmp_path, code: str) -> TrainingRun:
    job = JobFolder(tmp_path / "job")
    job.write({"state": "running", "steps_done": 3})
    return TrainingRun(job, subprocess.Popen([sys.executable, "-c", code, str(job.path)]))


def test_a_worker_that_saves_and_exits_is_waited_for(tmp_path):
    run = _run(tmp_path, OBEYS_CANCEL)
    record = run.stop(grace=30)
    assert record["state"] == "cancelled" and run.process.returncode == 0


def test_a_worker_still_running_after_the_grace_time_is_killed_and_recorded(tmp_path):
    run = _run(tmp_path, "import time; time.sleep(60)")
    record = run.stop(grace=0.5)
    assert not run.running and record["state"] == "failed" and "resume" in record["error"]
