"""The service end to end on a tiny random SD1 model: a real huey consumer (SqliteHuey under --data) in its own
worker process trains a LoRA from uploaded photos (one of them faceless, rejected with its reason), then draws
pictures with it; webhooks arrive signed; deleting the model erases the LoRA, the photos and the pictures.
The tiny model draws no faces: every picture is faceless and unscored, which the results must say."""

from __future__ import annotations

import io
import json
import os

import pytest
import tiny_models
from fastapi.testclient import TestClient
from PIL import Image
from service_kit import WebhookReceiver, b64_png, bearer, noise_photo, wait_for

from headshot.samples import astronaut_shots
from headshot.service.app import create_app
from headshot.service.auth import add_user
from headshot.service.config import ServiceConfig
from headshot.service.db import Store
from headshot.service.tasks import JobQueue
from headshot.service.worker import start_workers, stop_workers


@pytest.fixture(scope="module")
def tiny_sd1(tmp_path_factory):
    return tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))


def test_train_then_generate_then_erase_through_a_real_worker(tiny_sd1, tmp_path):
    config = ServiceConfig(
        data_dir=tmp_path / "data",
        base_model=str(tiny_sd1),
        device="cpu",
        face_backend="dlib",
        validation_images=0,
        private_webhooks=True,  # the receiver listens on 127.0.0.1
    )
    config.data_dir.mkdir()
    store = Store(config.database)
    key, secret = add_user(store, "alice")
    client = TestClient(create_app(config, store, JobQueue(config, store)))
    selfies = [b64_png(img) for img in list(astronaut_shots().values())[:4]]
    workers = start_workers(config, 1, tmp_path / "workers.log")
    try:
        with WebhookReceiver() as receiver:
            body = {
                "user_id": "alice",
                "instance_name": "jane",
                "images": selfies + [noise_photo(1)],
                "class_type": "woman",
                "training": {"steps": 2, "resolution": 64, "rank": 4},
                "webhook_url": receiver.url,
            }
            accepted = client.post("/v1/models/train", json=body, headers=bearer(key)).json()
            trained = wait_for(client, accepted["training_job_id"], key)
            assert trained["status"] == "succeeded", (trained["error"], (tmp_path / "workers.log").read_text()[-3000:])
            assert trained["kept_photos"] == 4 and trained["attempts"] == 1
            assert trained["rejected_photos"] == [
                {"photo": "photo-05.png", "reason": "no_face", "message": trained["rejected_photos"][0]["message"]}
            ]
            assert trained["progress"]["total"] == 2
            model = client.get(f"/v1/models/{accepted['model_id']}", headers=bearer(key)).json()
            assert model["status"] == "ready" and model["trigger"] == "ohwx woman"
            lora = client.get(model["download_url"], headers=bearer(key))
            assert lora.status_code == 200 and b"lora_unet" in lora.content[:200_000]

            request = {"model_id": model["model_id"], "style_template": "linkedin_corporate", "num_images": 2}
            request |= {"width": 64, "height": 64, "steps": 2, "seed": 5, "webhook_url": receiver.url}
            generation = client.post("/v1/images/generate_avatar", json=request, headers=bearer(key)).json()
            drawn = wait_for(client, generation["generation_job_id"], key)
            assert drawn["status"] == "succeeded", (drawn["error"], (tmp_path / "workers.log").read_text()[-3000:])
            assert sorted(image["seed"] for image in drawn["images"]) == [5, 6]
            for image in drawn["images"]:
                assert image["faceless"] is True and image["identity_score"] is None
                picture = client.get(image["url"], headers=bearer(key))
                assert Image.open(io.BytesIO(picture.content)).size == (64, 64)
            calls = receiver.wait(2)
            assert [json.loads(c["body"])["job_id"] for c in calls] == [trained["job_id"], drawn["job_id"]]

        files = [p for p in config.data_dir.rglob("*") if p.is_file() and "mdl_" in str(p) or "images" in str(p)]
        assert any(p.suffix == ".safetensors" for p in files) and any(p.suffix == ".png" for p in files)
        erased = client.delete(f"/v1/models/{model['model_id']}", headers=bearer(key)).json()
        assert erased["deleted"] and erased["files_removed"] >= len([p for p in files if p.is_file()])
        left = [p for p in config.data_dir.rglob("*") if p.is_file() and (model["model_id"] in str(p))]
        assert left == [] and not (config.data_dir / "images" / drawn["job_id"]).exists()
        assert client.get(drawn["images"][0]["url"], headers=bearer(key)).status_code == 404
    finally:
        stop_workers(workers)
    assert all(w.returncode is not None for w in workers) and os.path.exists(tmp_path / "workers.log")
