"""The /headshot/v1 routes on a bare FastAPI app (the WebUI's app is a FastAPI app too): job answers from the
core, error codes as statuses, and no request path that leaves the WebUI's folders. The WebUI's modules are
stood in by the few paths the routes read (tests/test_a1111_glue.py's fixture)."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # FastAPI's TestClient

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from tests.test_a1111_glue import webui  # noqa: E402,F401  (the fixture)


@pytest.fixture
def client(webui, monkeypatch):  # noqa: F811
    from a1111_extension.routes import on_app_started

    monkeypatch.delenv("HEADSHOT_ALLOWED_DIRS", raising=False)
    app = FastAPI()
    on_app_started(None, app)
    return TestClient(app)


def _job(webui, name: str, state: str) -> None:  # noqa: F811
    folder = webui.data / "outputs" / "headshot" / "jobs" / name
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"state": state, "steps_done": 4, "lora": f"{name}.safetensors"}))
    (folder / "events.jsonl").write_text('{"type": "step", "step": 4, "total": 8}\n')


def test_job_list_and_status_have_the_comfyui_routes_fields(client, webui):  # noqa: F811
    _job(webui, "alice-0123456789ab", "done")
    jobs = client.get("/headshot/v1/jobs")
    assert jobs.status_code == 200
    (job,) = jobs.json()["jobs"]
    assert set(job) == {"name", "state", "steps_done", "lora"} and job["state"] == "done"
    status = client.get("/headshot/v1/jobs/alice-0123456789ab?events=5").json()
    assert status["job"]["steps_done"] == 4 and status["events"][0]["type"] == "step"
    cancel = client.post("/headshot/v1/jobs/alice-0123456789ab/cancel").json()
    assert cancel["cancel_requested"] is False and cancel["state"] == "done"


def test_unknown_job_is_404_and_a_bad_name_400_with_the_core_code(client):
    missing = client.get("/headshot/v1/jobs/nobody")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = client.post("/headshot/v1/jobs/..%5Cetc/cancel")
    assert bad.status_code == 400 and bad.json()["code"] == "bad_name"


def test_prepare_refuses_a_folder_outside_the_webui_folders_even_through_a_link(client, webui, tmp_path):  # noqa: F811
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    answer = client.post("/headshot/v1/prepare", json={"photos_folder": str(outside), "dataset_name": "a"})
    assert answer.status_code == 403 and answer.json()["code"] == "path_not_allowed"
    link = webui.data / "outputs" / "photos"
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, link)
    through_link = client.post("/headshot/v1/prepare", json={"photos_folder": str(link), "dataset_name": "a"})
    assert through_link.status_code == 403 and through_link.json()["code"] == "path_not_allowed"
    dots = client.post("/headshot/v1/prepare", json={"photos_folder": "../../..", "dataset_name": "a"})
    assert dots.status_code == 403


def test_train_checks_its_body(client, webui):  # noqa: F811
    not_object = client.post("/headshot/v1/train", json=["a"])
    assert not_object.status_code == 400 and not_object.json()["code"] == "bad_option"
    unknown = client.post("/headshot/v1/train", json={"dataset_name": "a", "stepz": 3})
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_option"
    no_dataset = client.post("/headshot/v1/train", json={"dataset_name": "nobody", "checkpoint": "x"})
    assert no_dataset.status_code == 404 and no_dataset.json()["code"] == "no_dataset"
    escape = client.post("/headshot/v1/train", json={"dataset_name": "../x", "checkpoint": "x"})
    assert escape.status_code == 400 and escape.json()["code"] == "bad_name"


def test_a_job_still_being_set_up_answers_preparing_not_404(client, webui, monkeypatch):  # noqa: F811
    from a1111_extension import training

    job_dir = webui.data / "outputs" / "headshot" / "jobs" / "bob-0123456789ab"  # no folder yet
    monkeypatch.setattr(
        training.SESSION,
        "progress",
        training.Progress("preparing", "building the trainer environment", job_dir=job_dir),
    )
    answer = client.get("/headshot/v1/jobs/bob-0123456789ab")
    assert answer.status_code == 200
    assert answer.json()["job"] == {"state": "preparing", "message": "building the trainer environment"}
    assert client.get("/headshot/v1/jobs/someone-else").status_code == 404


def test_a_failed_job_tried_again_answers_preparing_until_its_worker_starts(client, webui, monkeypatch):  # noqa: F811
    from a1111_extension import training

    _job(webui, "carol-0123456789ab", "failed")
    job_dir = webui.data / "outputs" / "headshot" / "jobs" / "carol-0123456789ab"
    assert client.get("/headshot/v1/jobs/carol-0123456789ab").json()["job"]["state"] == "failed"
    monkeypatch.setattr(training.SESSION, "progress", training.Progress("preparing", "starting", job_dir=job_dir))
    assert client.get("/headshot/v1/jobs/carol-0123456789ab").json()["job"]["state"] == "preparing"
    monkeypatch.setattr(training.SESSION, "progress", training.Progress("failed", "no dlib", job_dir=job_dir))
    assert client.get("/headshot/v1/jobs/carol-0123456789ab").json()["job"]["state"] == "failed"
