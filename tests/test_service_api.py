"""The service's HTTP API in process (FastAPI's TestClient over httpx): keys, isolation between users, limits,
idempotency, cancelling, erasure and errors. No consumer runs here, so jobs stay queued in the real SqliteHuey
queue, except where a test is about a job's end (huey's immediate mode runs it inside the request)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_kit import WebhookReceiver, b64_png, bearer, noise_photo, png_claiming

from headshot.samples import astronaut_shots
from headshot.service.app import create_app
from headshot.service.auth import add_user
from headshot.service.config import Limits, ServiceConfig
from headshot.service.db import Job, Model, Picture, Store
from headshot.service.limits import decode_reference
from headshot.service.runner import recover, run_job
from headshot.service.tasks import JobQueue


@pytest.fixture(scope="module")
def selfies():
    return [b64_png(img.resize((256, 256))) for img in list(astronaut_shots().values())[:4]]


def _service(tmp_path, **limits):
    config = ServiceConfig(
        data_dir=tmp_path,
        base_model=str(tmp_path),
        face_backend="dlib",
        limits=Limits(**limits),
        private_webhooks=True,  # the test's webhook receiver listens on 127.0.0.1
    )
    store = Store(config.database)
    queue = JobQueue(config, store)
    keys = {name: add_user(store, name) for name in ("alice", "bob")}
    client = TestClient(create_app(config, store, queue), raise_server_exceptions=False)
    return config, store, queue, client, keys


@pytest.fixture
def service(tmp_path):
    return _service(tmp_path)


def _train(client, key, user, images, headers=None, **extra):
    body = {"user_id": user, "instance_name": "jane", "images": images, "class_type": "woman", **extra}
    return client.post("/v1/models/train", json=body, headers=bearer(key) | (headers or {}))


def _ready_model(store, config, user="alice") -> str:
    """A model whose training is recorded as done (the generation checks need one; no LoRA is read here)."""
    with store.session() as s:
        s.add(Model(id="mdl_ready", user_id=user, instance_name="jane", class_type="woman", trigger="ohwx",
                    base_model=config.base_model, status="ready", lora="models/mdl_ready/jane.safetensors",
                    training_job_id="job_x"))  # fmt: skip
    return "mdl_ready"


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 15, error
    return error["message"]


def test_keys_are_stored_hashed_and_calls_without_a_valid_key_are_401(service):
    config, store, _, client, keys = service
    key, _ = keys["alice"]
    with store.session() as s:
        from headshot.service.db import ApiKey

        stored = [row.digest for row in s.query(ApiKey)]
    assert key not in " ".join(stored) and key.split("_", 2)[2] not in " ".join(stored)
    response = client.get("/v1/models")
    assert "Bearer" in response.headers["WWW-Authenticate"]
    _error(response, 401, "unauthorized")
    _error(client.get("/v1/models", headers=bearer(key[:-2] + "xx")), 401, "unauthorized")
    _error(client.get("/v1/models", headers={"Authorization": key}), 401, "unauthorized")
    assert client.get("/v1/models", headers=bearer(key)).json() == {"models": []}


def test_a_body_naming_another_user_is_403(service, selfies):
    _, _, _, client, keys = service
    _error(_train(client, keys["alice"][0], "bob", selfies), 403, "forbidden")


def test_another_users_job_model_and_image_are_404(service, selfies):
    config, store, _, client, keys = service
    alice, bob = keys["alice"][0], keys["bob"][0]
    accepted = _train(client, alice, "alice", selfies).json()
    job_id, model_id = accepted["training_job_id"], accepted["model_id"]
    picture = config.data_dir / "images" / "job_g" / "a.png"
    picture.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(picture)
    with store.session() as s:
        s.add(Picture(id="img_a", job_id="job_g", user_id="alice", model_id=model_id, path="images/job_g/a.png",
                      seed=1, identity_score=None, faceless=True, position=0))  # fmt: skip
    assert client.get("/v1/images/img_a", headers=bearer(alice)).headers["content-type"] == "image/png"
    for method, path in [
        ("get", f"/v1/jobs/{job_id}"),
        ("post", f"/v1/jobs/{job_id}/cancel"),
        ("get", f"/v1/models/{model_id}"),
        ("get", f"/v1/models/{model_id}/lora"),
        ("delete", f"/v1/models/{model_id}"),
        ("get", "/v1/images/img_a"),
    ]:
        _error(getattr(client, method)(path, headers=bearer(bob)), 404, "not_found")
    assert client.get("/v1/models", headers=bearer(bob)).json() == {"models": []}
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(alice)).json()["status"] == "queued"


def test_training_is_accepted_queued_with_an_estimate_from_the_measured_speed(service, selfies):
    config, store, queue, client, keys = service
    response = _train(client, keys["alice"][0], "alice", selfies, training={"steps": 100, "rank": 4})
    assert response.status_code == 202, response.text
    first = response.json()
    assert first["status"] == "queued" and first["estimated_time"] == int(60 + 100 * config.default_seconds_per_step)
    assert queue.pending() == 1
    uploads = sorted((config.data_dir / "uploads" / first["model_id"]).iterdir())
    assert [p.name for p in uploads] == ["photo-01.png", "photo-02.png", "photo-03.png", "photo-04.png"]
    job = client.get(f"/v1/jobs/{first['training_job_id']}", headers=bearer(keys["alice"][0])).json()
    assert job["progress"] == {"step": 0, "total": 100, "eta_s": None} and job["error"] is None
    store.measure("train_seconds_per_step", 0.25)
    second = _train(client, keys["bob"][0], "bob", selfies, training={"steps": 100}).json()
    assert second["estimated_time"] == 60 + 25


def test_a_body_over_the_limit_is_413(tmp_path):
    _, _, _, client, keys = _service(tmp_path, max_body_bytes=100_000)
    response = client.post("/v1/models/train", content=b"x" * 200_000, headers=bearer(keys["alice"][0]))
    _error(response, 413, "body_too_large")


@pytest.mark.parametrize(
    "images, status, code",
    [
        (lambda s: s[:2], 422, "too_few_photos"),
        (lambda s: s * 6, 422, "too_many_photos"),
        (lambda s: s[:3] + ["not base64!"], 422, "bad_base64"),
        (lambda s: s[:3] + ["aGVsbG8gd29ybGQ="], 422, "not_an_image"),
        (lambda s: s[:3] + [png_claiming(8000, 8000)], 413, "photo_too_large"),  # 64 MP, over the 50 MP limit
        (lambda s: s[:3] + [png_claiming(40000, 40000)], 413, "photo_too_large"),  # Pillow's own bomb error
    ],
)
def test_photos_are_refused_before_anything_is_written(service, selfies, images, status, code):
    config, _, queue, client, keys = service
    _error(_train(client, keys["alice"][0], "alice", images(selfies)), status, code)
    assert not (config.data_dir / "uploads").exists() and queue.pending() == 0


def test_an_operator_limit_above_pillows_own_admits_a_108_megapixel_photo():
    # Pillow warns above 89 MP: the service's limit decides, not Pillow's warning
    data, extension = decode_reference(png_claiming(12000, 9000), Limits(max_photo_pixels=200_000_000))
    assert extension == ".png" and data.startswith(b"\x89PNG")


def test_a_photo_over_the_byte_limit_is_413(tmp_path, selfies):
    _, _, _, client, keys = _service(tmp_path, max_photo_bytes=10_000)
    _error(_train(client, keys["alice"][0], "alice", selfies), 413, "photo_too_large")


@pytest.mark.parametrize("name", ["../etc", "jane/doe", "a b", "", ".hidden", "x" * 65])
def test_instance_name_must_be_a_plain_name(service, selfies, name):
    _, _, _, client, keys = service
    response = _train(client, keys["alice"][0], "alice", selfies, instance_name=name)
    assert response.status_code == 422 and response.json()["error"]["code"] in ("bad_name", "invalid_request")


def test_generation_checks_the_model_count_size_and_style(service, selfies):
    config, store, queue, client, keys = service
    alice = keys["alice"][0]
    training = _train(client, alice, "alice", selfies).json()
    model_id = _ready_model(store, config)

    def generate(**body):
        body = {"model_id": model_id, "style_template": "linkedin_corporate", "num_images": 4} | body
        return client.post("/v1/images/generate_avatar", json=body, headers=bearer(alice))

    _error(generate(num_images=0), 422, "invalid_request")
    _error(generate(num_images=101), 422, "bad_option")
    _error(generate(width=512), 422, "bad_option")
    _error(generate(width=500, height=512), 422, "bad_option")
    _error(generate(style_template="no_such_style"), 422, "unknown_style")
    _error(generate(model_id=training["model_id"]), 409, "model_not_ready")
    _error(generate(model_id="mdl_nothing"), 404, "not_found")
    accepted = generate(num_images=100, seed=3)
    assert accepted.status_code == 202 and accepted.json()["status"] == "queued"
    job = client.get(f"/v1/jobs/{accepted.json()['generation_job_id']}", headers=bearer(alice)).json()
    assert job["kind"] == "generate" and job["images"] == [] and job["progress"]["total"] == 100


def test_too_many_jobs_at_once_and_the_daily_quota_are_429_with_retry_after(tmp_path, selfies):
    _, store, _, client, keys = _service(tmp_path, max_concurrent_jobs=1, daily_jobs=2)
    alice = keys["alice"][0]
    first = _train(client, alice, "alice", selfies).json()["training_job_id"]
    response = _train(client, alice, "alice", selfies)
    _error(response, 429, "too_many_jobs")
    assert int(response.headers["Retry-After"]) > 0
    client.post(f"/v1/jobs/{first}/cancel", headers=bearer(alice))
    assert _train(client, alice, "alice", selfies).status_code == 202
    store.update_job(_jobs(store)[-1].id, status="failed")
    response = _train(client, alice, "alice", selfies)
    _error(response, 429, "quota_exceeded")
    assert 86000 < int(response.headers["Retry-After"]) <= 86401
    assert _train(client, keys["bob"][0], "bob", selfies).status_code == 202  # each user has their own


def _jobs(store):
    with store.session() as s:
        return list(s.query(Job).order_by(Job.created))


def test_a_retried_post_with_the_same_idempotency_key_returns_the_same_job(service, selfies):
    _, store, queue, client, keys = service
    alice = keys["alice"][0]
    headers = {"Idempotency-Key": "upload-42"}
    first = _train(client, alice, "alice", selfies, headers=headers)
    again = _train(client, alice, "alice", selfies, headers=headers)
    assert first.status_code == again.status_code == 202 and first.json() == again.json()
    assert len(_jobs(store)) == 1 and queue.pending() == 1
    _error(_train(client, alice, "alice", selfies[:3], headers=headers), 409, "idempotency_conflict")
    assert _train(client, keys["bob"][0], "bob", selfies, headers=headers).json() != first.json()  # keys per user


def test_a_cancelled_queued_job_is_never_run(service, selfies):
    config, store, queue, client, keys = service
    alice = keys["alice"][0]
    job_id = _train(client, alice, "alice", selfies).json()["training_job_id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(alice)).json() == {
        "job_id": job_id,
        "status": "cancelled",
        "cancel_requested": True,
    }
    ran = []
    run_job(config, store, job_id, lambda job, beat: ran.append(job) or {}, lambda kind, job: None)
    assert ran == [] and store.job(job_id).status == "cancelled"
    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(alice)).json()
    assert again["cancel_requested"] is False
    assert client.get(f"/v1/models/{_jobs(store)[0].model_id}", headers=bearer(alice)).json()["status"] == "training"


def test_deleting_a_model_erases_its_photos_and_cancels_its_jobs(service, selfies):
    config, store, _, client, keys = service
    alice = keys["alice"][0]
    accepted = _train(client, alice, "alice", selfies).json()
    uploads = config.data_dir / "uploads" / accepted["model_id"]
    assert len(list(uploads.iterdir())) == 4
    erased = client.delete(f"/v1/models/{accepted['model_id']}", headers=bearer(alice)).json()
    assert erased == {"model_id": accepted["model_id"], "deleted": True, "files_removed": 4, "jobs_cancelled": 1}
    assert not uploads.exists()
    _error(client.get(f"/v1/models/{accepted['model_id']}", headers=bearer(alice)), 404, "not_found")
    assert client.get(f"/v1/jobs/{accepted['training_job_id']}", headers=bearer(alice)).json()["status"] == "cancelled"


def test_a_training_job_is_not_erased_alone_the_answer_names_the_model_to_erase(service, selfies):
    _, _, _, client, keys = service
    accepted = _train(client, keys["alice"][0], "alice", selfies).json()
    message = _error(
        client.delete(f"/v1/jobs/{accepted['training_job_id']}", headers=bearer(keys["alice"][0])),
        409,
        "wrong_job_kind",
    )
    assert f"DELETE /v1/models/{accepted['model_id']}" in message
    _error(client.delete(f"/v1/jobs/{accepted['training_job_id']}", headers=bearer(keys["bob"][0])), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"user_id": 5}', b'{"user_id": "alice", "instance_name": "x", "images": "abc"}',
     b'{"user_id": "alice", "instance_name": "x", "images": [], "training": {"steps": -1}}',
     b'{"user_id": "alice", "instance_name": "x", "images": [], "surprise": 1}',
     b'{"user_id": "alice", "instance_name": "x", "images": [], "training": {"steps": 1e400}}'],
)  # fmt: skip
def test_malformed_bodies_are_4xx_json_never_500(service, body):
    _, _, _, client, keys = service
    response = client.post("/v1/models/train", content=body, headers=bearer(keys["alice"][0]))
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"]


def test_styles_and_openapi_are_served(service):
    _, _, _, client, keys = service
    styles = client.get("/v1/styles", headers=bearer(keys["alice"][0])).json()["styles"]
    assert "linkedin_corporate" in {s["name"] for s in styles}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/models/train", "/v1/images/generate_avatar", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel"} <= set(
        paths
    )
    _error(client.get("/v1/nowhere"), 404, "not_found")


def test_a_job_whose_photos_show_no_face_fails_with_each_reason_and_a_signed_webhook(service):
    config, store, queue, client, keys = service
    alice, secret = keys["alice"]
    queue.huey.immediate = True  # the job runs inside the request: this test is about how a job ends
    with WebhookReceiver() as receiver:
        photos = [noise_photo(seed) for seed in range(3)]
        accepted = _train(client, alice, "alice", photos, webhook_url=receiver.url).json()
        calls = receiver.wait(1)
    job = client.get(f"/v1/jobs/{accepted['training_job_id']}", headers=bearer(alice)).json()
    assert job["status"] == "failed" and job["error"]["code"] == "too_few_photos_kept"
    assert job["kept_photos"] == 0 and [r["reason"] for r in job["rejected_photos"]] == ["no_face"] * 3
    assert all(r["message"] for r in job["rejected_photos"])
    assert client.get(f"/v1/models/{accepted['model_id']}", headers=bearer(alice)).json()["status"] == "failed"
    (call,) = calls
    headers = {k.lower(): v for k, v in call["headers"].items()}
    signed = headers["x-headshot-timestamp"].encode() + b"." + call["body"]
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-headshot-signature"], expected)
    assert json.loads(call["body"]) == job
    wrong = "sha256=" + hmac.new(keys["bob"][1].encode(), signed, hashlib.sha256).hexdigest()
    assert headers["x-headshot-signature"] != wrong


def test_a_job_left_running_by_a_dead_worker_is_requeued_then_failed_after_the_last_try(service, selfies):
    config, store, queue, client, keys = service
    job_id = _train(client, keys["alice"][0], "alice", selfies).json()["training_job_id"]
    sent = []
    for attempt in range(1, config.max_attempts + 1):
        store.update_job(job_id, status="running", attempts=attempt, worker="localhost-gone:1", heartbeat=0.0)
        assert recover(config, store, lambda kind, job: sent.append(job)) == [job_id]
        assert store.job(job_id).status == "queued" and store.job(job_id).error_code == "worker_lost"
    ran = []
    run_job(config, store, job_id, lambda job, beat: ran.append(job) or {}, lambda kind, job: None)
    job = store.job(job_id)
    assert ran == [] and job.status == "failed" and job.error_code == "gave_up"
    assert f"after {config.max_attempts} tries" in job.error_message and "stopped while running" in job.error_message


def test_a_crashing_job_is_tried_again_up_to_the_limit_with_its_error(service, selfies):
    config, store, queue, client, keys = service
    job_id = _train(client, keys["alice"][0], "alice", selfies).json()["training_job_id"]
    sent = []

    def crash(job, beat):
        raise MemoryError("out of memory in step 3")

    for _ in range(config.max_attempts):
        run_job(config, store, job_id, crash, lambda kind, job: sent.append(job))
    job = store.job(job_id)
    assert sent == [job_id] * (config.max_attempts - 1) and job.status == "failed" and job.error_code == "job_crashed"
    assert "out of memory in step 3" in job.error_message and job.attempts == config.max_attempts
