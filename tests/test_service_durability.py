"""kill -9 of `headshot serve`, its worker and the training process (the whole process group) while a job trains,
then a restart on the same --data: the job goes on from its last checkpoint and succeeds.

Real processes on a free 127.0.0.1 port, a tiny random SD1 model on the CPU. A job that keeps crashing, and one
whose worker died on every try, are failed after N tries: tests/test_service_api.py covers those."""

from __future__ import annotations

import json

import httpx
import pytest
import tiny_models
from service_kit import b64_png, bearer, wait_for
from service_processes import free_port, serve, wait_until

from headshot.outputs import pid_alive
from headshot.samples import astronaut_shots
from headshot.service.auth import add_user
from headshot.service.config import ServiceConfig
from headshot.service.db import Store
from headshot.train.job import JobFolder

STEPS, EVERY = 10, 2


@pytest.fixture(scope="module")
def tiny_sd1(tmp_path_factory):
    return tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))


def _events(folder: JobFolder) -> list[dict]:
    path = folder.path / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_kill_9_while_training_then_a_restart_resumes_from_the_last_checkpoint(tiny_sd1, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    store = Store(ServiceConfig(data_dir=data).database)
    key, _ = add_user(store, "alice")
    options = ["--workers", "1", "--checkpoint-every", str(EVERY)]
    port = free_port()
    server = serve(data, tiny_sd1, port, options)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        selfies = [b64_png(img) for img in list(astronaut_shots().values())[:4]]
        body = {"user_id": "alice", "instance_name": "jane", "images": selfies, "class_type": "woman"}
        body["training"] = {"steps": STEPS, "resolution": 64, "rank": 4}
        accepted = client.post("/v1/models/train", json=body, headers=bearer(key)).json()
        job_id, model_id = accepted["training_job_id"], accepted["model_id"]
        training = JobFolder(data / "models" / model_id / "training")
        wait_until(lambda: training.checkpoints(), 300, "no checkpoint was written", server.log, poll=0.05)
        server.kill_group()  # serve, its worker and the training process, with no chance to save anything
    finally:
        server.stop(grace=5)
    record = training.read()
    saved_step = training.checkpoints()[-1][0]
    cut = store.job(job_id)
    assert cut is not None and cut.status == "running" and cut.attempts == 1  # what kill -9 leaves behind
    assert 0 < saved_step <= record["steps_done"] < STEPS, "the kill came after training had ended"
    killed = [int(cut.worker.rpartition(":")[2]), record["worker_pid"]]  # the service's worker, the trainer
    wait_until(lambda: not any(pid_alive(pid) for pid in killed), 30, f"processes {killed} outlived kill -9")

    port = free_port()
    server = serve(data, tiny_sd1, port, options)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        assert f"re-queued 1 job(s) left running by a stopped worker: {job_id}" in server.log()
        done = wait_for(client, job_id, key, timeout=300)
        workers_log = (data / "logs" / "workers.log").read_text(errors="replace")
        assert done["status"] == "succeeded", (done["error"], workers_log[-3000:])
        assert done["attempts"] == 2 and done["progress"]["step"] == STEPS
        assert f"job {job_id} resumes training from step {saved_step}" in workers_log
        events = _events(training)
        resumed = [i for i, event in enumerate(events) if event["type"] == "resumed"]
        assert [events[i]["step"] for i in resumed] == [saved_step]
        steps_after = [e["step"] for e in events[resumed[0] :] if e["type"] == "step"]
        assert steps_after == list(range(saved_step + 1, STEPS + 1))  # trained on, not again from 0
        model = client.get(f"/v1/models/{model_id}", headers=bearer(key)).json()
        assert model["status"] == "ready"
        assert client.get(model["download_url"], headers=bearer(key)).status_code == 200
    finally:
        server.stop()
