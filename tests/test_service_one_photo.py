"""`POST /v1/images/generate_avatar` with a reference_image instead of a model_id: one-photo mode in the service.

The request checks run in process (FastAPI's TestClient); the jobs run inside the request (huey's immediate
mode) on the tiny SD1 model with a tiny FaceID adapter in the real layout and stand-in buffalo_l ONNX graphs
(tests/faceid_fixtures.py: the detector reports fixed faces whatever the photo). They prove wiring (the photo
reaches the identity adapter, pictures come back, a refused photo fails the job with prepare's reason), not
likeness.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("diffusers")

import tiny_models  # noqa: E402
from faceid_fixtures import faceid_state, make_buffalo_pack, save_adapter  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from service_kit import b64_png, bearer, noise_photo, png_claiming  # noqa: E402

from headshot.samples import astronaut  # noqa: E402
from headshot.service import generation_task  # noqa: E402
from headshot.service.app import create_app  # noqa: E402
from headshot.service.auth import add_user  # noqa: E402
from headshot.service.config import Limits, ServiceConfig  # noqa: E402
from headshot.service.db import Store  # noqa: E402
from headshot.service.tasks import JobQueue  # noqa: E402

FACE_AT = (281, 150, 140)  # the astronaut's face in the detector's 640 px canvas (test_identity_adapter_cli)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    root = tmp_path_factory.mktemp("one_photo_service")
    base = tiny_models.make_tiny_sd1(root / "sd1")
    adapter = save_adapter(
        faceid_state(UNet2DConditionModel.from_pretrained(base / "unet")),
        root / "adapters" / "ip-adapter-faceid_sd15.safetensors",
    )
    packs = {
        "one": [FACE_AT],
        "none": [],
        "two": [(160, 150, 140), (480, 150, 140)],
    }
    for name, faces in packs.items():
        make_buffalo_pack(root / name / "models" / "buffalo_l", faces)
    return {"root": root, "base": base, "adapter": adapter, "photo": b64_png(astronaut())}


@pytest.fixture(autouse=True)
def fresh_worker(monkeypatch, tmp_path):
    """Each test is a fresh worker process: its face analyzer (one per backend name) is loaded from this
    test's buffalo_l pack. No host folders: only the adapter the config names is found."""
    monkeypatch.setattr(generation_task, "_warm", {})
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.delenv("A1111_PATH", raising=False)
    monkeypatch.chdir(tmp_path)


def _service(kit, tmp_path, faces="one", adapter=True, backend="insightface", **limits):
    config = ServiceConfig(
        data_dir=tmp_path / "data",
        base_model=str(kit["base"]),
        face_backend=backend,
        face_model_dirs=(str(kit["root"] / faces),),
        device="cpu",
        detailer=False,
        adapter=str(kit["adapter"]) if adapter else None,
        limits=Limits(**limits),
    )
    config.data_dir.mkdir()
    store = Store(config.database)
    queue = JobQueue(config, store)
    key, _ = add_user(store, "alice")
    client = TestClient(create_app(config, store, queue), raise_server_exceptions=False)
    return config, queue, client, key


def _draw(client, key, **body):
    body = {"style_template": "linkedin_corporate", "num_images": 1, "width": 64, "height": 64, "steps": 2} | body
    return client.post("/v1/images/generate_avatar", json=body, headers=bearer(key))


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error["message"]


def test_exactly_one_of_model_id_and_reference_image_is_required(kit, tmp_path):
    config, queue, client, key = _service(kit, tmp_path)
    neither = _error(_draw(client, key), 422, "bad_option")
    assert "model_id" in neither and "reference_image" in neither
    _error(_draw(client, key, model_id="mdl_x", reference_image=kit["photo"]), 422, "bad_option")


def test_the_reference_image_goes_through_the_upload_limits(kit, tmp_path):
    config, queue, client, key = _service(kit, tmp_path, max_photo_bytes=64 * 1024)
    assert "reference_image" in _error(_draw(client, key, reference_image="not base64!"), 422, "bad_base64")
    _error(_draw(client, key, reference_image=png_claiming(40_000, 40_000)), 413, "photo_too_large")  # a bomb
    _error(_draw(client, key, reference_image=noise_photo(1)), 413, "photo_too_large")  # 120 KB of noise
    assert not (config.data_dir / "uploads").exists()


def test_no_adapter_file_is_refused_at_submission_naming_the_file_and_where_it_goes(kit, tmp_path):
    config, queue, client, key = _service(kit, tmp_path, adapter=False)
    message = _error(_draw(client, key, reference_image=kit["photo"]), 409, "adapter_missing")
    assert "ip-adapter-faceid_sd15.bin" in message and "models/ipadapter" in message and "--adapter" in message
    assert not (config.data_dir / "uploads").exists()


def test_a_dlib_only_server_refuses_one_photo_mode_at_submission(kit, tmp_path):
    config, queue, client, key = _service(kit, tmp_path, backend="dlib")
    message = _error(_draw(client, key, reference_image=kit["photo"]), 409, "backend_unavailable")
    assert "--face-backend insightface" in message
    assert not (config.data_dir / "uploads").exists()


def test_a_one_photo_job_draws_pictures_with_no_model_and_keeps_no_photo(kit, tmp_path):
    config, queue, client, key = _service(kit, tmp_path)
    queue.huey.immediate = True  # the job runs inside the request
    accepted = _draw(client, key, reference_image=kit["photo"], num_images=2)
    assert accepted.status_code == 202, accepted.text
    job = client.get(f"/v1/jobs/{accepted.json()['generation_job_id']}", headers=bearer(key)).json()
    assert job["status"] == "succeeded", job["error"]
    assert job["model_id"] is None and len(job["images"]) == 2
    picture = client.get(f"/v1/images/{job['images'][0]['image_id']}", headers=bearer(key))
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    results = json.loads(next((config.data_dir / "images").rglob("results.json")).read_text())
    entries = results if isinstance(results, list) else results["pictures"]
    assert all(e["identity_adapter"] == str(kit["adapter"]) and e["loras"] == [] for e in entries)
    assert not any((config.data_dir / "uploads").rglob("*.*"))  # the person's photo is not kept


@pytest.mark.parametrize(
    "faces, code, words", [("none", "no_face", "no face found"), ("two", "multiple_faces", "2 faces")]
)
def test_a_photo_prepare_would_refuse_fails_the_job_with_its_reason(kit, tmp_path, faces, code, words):
    config, queue, client, key = _service(kit, tmp_path, faces=faces)
    queue.huey.immediate = True
    accepted = _draw(client, key, reference_image=kit["photo"])
    job = client.get(f"/v1/jobs/{accepted.json()['generation_job_id']}", headers=bearer(key)).json()
    assert job["status"] == "failed" and job["error"]["code"] == code
    assert words in job["error"]["message"] and job["images"] == []
    assert not any((config.data_dir / "uploads").rglob("*.*"))


def test_a_one_photo_job_cancelled_while_queued_keeps_no_photo(kit, tmp_path):
    config, queue, client, key = _service(kit, tmp_path)  # no worker: the job stays queued
    accepted = _draw(client, key, reference_image=kit["photo"])
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["generation_job_id"]
    assert any((config.data_dir / "uploads" / job_id).iterdir())  # the photo waits for its job
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(key)).json()
    assert cancelled["status"] == "cancelled"
    assert not (config.data_dir / "uploads" / job_id).exists()


def test_erasing_a_one_photo_job_removes_its_pictures(kit, tmp_path):
    config, queue, client, key = _service(kit, tmp_path)
    queue.huey.immediate = True
    job_id = _draw(client, key, reference_image=kit["photo"], num_images=2).json()["generation_job_id"]
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(key)).json()
    assert job["status"] == "succeeded" and len(job["images"]) == 2
    erased = client.delete(f"/v1/jobs/{job_id}", headers=bearer(key))
    assert erased.status_code == 200, erased.text
    assert erased.json()["pictures_removed"] == 2 and erased.json()["files_removed"] >= 2
    assert not (config.data_dir / "images" / job_id).exists()
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(key)).json()["images"] == []
    _error(client.get(f"/v1/images/{job['images'][0]['image_id']}", headers=bearer(key)), 404, "not_found")


def test_erasing_a_queued_one_photo_job_cancels_it_and_a_running_one_is_refused(kit, tmp_path):
    config, queue, client, key = _service(kit, tmp_path)  # no worker: jobs stay queued
    queued = _draw(client, key, reference_image=kit["photo"]).json()["generation_job_id"]
    erased = client.delete(f"/v1/jobs/{queued}", headers=bearer(key)).json()
    assert erased["deleted"] and erased["files_removed"] == 1  # the photo waiting for the job
    assert client.get(f"/v1/jobs/{queued}", headers=bearer(key)).json()["status"] == "cancelled"
    assert not (config.data_dir / "uploads" / queued).exists()

    running = _draw(client, key, reference_image=kit["photo"]).json()["generation_job_id"]
    Store(config.database).update_job(running, status="running")  # a worker is drawing it
    message = _error(client.delete(f"/v1/jobs/{running}", headers=bearer(key)), 409, "job_running")
    assert f"POST /v1/jobs/{running}/cancel" in message
    assert any((config.data_dir / "uploads" / running).iterdir())  # nothing erased under a working job
