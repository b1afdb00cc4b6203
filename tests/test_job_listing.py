"""The training jobs under a jobs root as hosts show them (list, status, cancel), on real job folders.

A live worker is played by holding the job folder's lock, as the worker does for its whole life.
"""

from __future__ import annotations

import pytest

from headshot.errors import HeadshotError
from headshot.train.job import JobFolder
from headshot.train.job_listing import MAX_EVENTS, cancel_job, event_count, find_job, job_status, list_jobs


def _job(root, name: str, **record) -> JobFolder:
    job = JobFolder(root / "jobs" / name)
    job.write(record)
    return job


def test_a_running_job_is_listed_shown_and_cancelled(tmp_path):
    job = _job(tmp_path, "zoe-0123456789ab", state="running", steps_done=3)
    for step in range(1, 4):
        job.emit("step", step=step, total=10, loss=0.1)
    with job.lock():  # its worker, alive
        assert list_jobs(tmp_path) == [{"name": "zoe-0123456789ab", "state": "running", "steps_done": 3, "lora": None}]
        status = job_status(tmp_path, "zoe-0123456789ab", events=2)
        assert status["job"]["state"] == "running" and [e["step"] for e in status["events"]] == [2, 3]
        assert cancel_job(tmp_path, "zoe-0123456789ab") == {
            "name": "zoe-0123456789ab",
            "cancel_requested": True,
            "state": "running",
        }
        assert job.cancel_requested()


def test_a_job_whose_worker_has_gone_shows_as_interrupted_and_is_not_cancelled(tmp_path):
    job = _job(tmp_path, "zoe-0123456789ab", state="running", steps_done=3, worker_pid=None)
    assert list_jobs(tmp_path)[0]["state"] == "failed"
    assert job_status(tmp_path, "zoe-0123456789ab")["job"]["error_code"] == "interrupted"
    answer = cancel_job(tmp_path, "zoe-0123456789ab")
    assert answer["cancel_requested"] is False and "nothing to cancel" in answer["message"]
    assert not job.cancel_path.exists()  # no CANCEL left behind to stop the resumed run


def test_the_listed_lora_is_the_job_folders_own_file(tmp_path):
    """job.json is data: the path it names is not repeated, the folder's own file is."""
    job = _job(tmp_path, "me-0123456789ab", state="done", steps_done=8, lora="/home/someone/secret.safetensors")
    assert list_jobs(tmp_path)[0]["lora"] == str(job.path / "secret.safetensors")
    assert list_jobs(tmp_path / "nowhere") == []


def test_events_are_clamped(tmp_path):
    job = _job(tmp_path, "me-0123456789ab", state="done")
    for step in range(1, MAX_EVENTS + 6):
        job.emit("step", step=step, total=MAX_EVENTS + 5)
    for count in (-1, -(10**12)):
        assert job_status(tmp_path, "me-0123456789ab", count)["events"] == []  # not every event ever written
    huge = job_status(tmp_path, "me-0123456789ab", 10**12)["events"]
    assert len(huge) == MAX_EVENTS and huge[-1]["step"] == MAX_EVENTS + 5
    assert [e["step"] for e in job_status(tmp_path, "me-0123456789ab", "2")["events"]] == [1004, 1005]
    assert [event_count(v) for v in ("-1", "7", "1" * 5000, "x", None)] == [0, 7, 50, 50, 50]


def test_names_are_plain_folder_names_of_real_jobs(tmp_path):
    elsewhere = _job(tmp_path / "other", "secret-0123456789ab", state="done")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "planted").symlink_to(elsewhere.path)
    for name, code in [("../../etc", "bad_name"), ("", "bad_name"), ("nobody", "not_found"), ("planted", "not_found")]:
        with pytest.raises(HeadshotError) as caught:
            find_job(tmp_path, name)
        assert caught.value.code == code, name
    assert list_jobs(tmp_path) == []  # the planted link is not listed either
    with pytest.raises(HeadshotError, match="no training job called 'nobody'"):
        cancel_job(tmp_path, "nobody")
