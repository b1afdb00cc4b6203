"""The Train Identity LoRA node on a tiny random SD1 model, and the training job routes on ComfyUI's server.

Training through the node: progress on ComfyUI's bar, Cancel stopping the job, a resume from its
checkpoint, the finished job reused, and the LoRA listed under the name LoraLoader shows; then the
job routes registered on a stand-in PromptServer and answering as aiohttp handlers. ComfyUI's host
modules are the stand-ins of comfy_host_standin (see its docstring); the training runs for real.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import types
import weakref

import pytest
from comfy_host_standin import (
    InterruptProcessingException,
    _check_outputs,
    comfy_host,  # noqa: F401  (a fixture)
)

from comfy_nodes import NODE_CLASS_MAPPINGS, common, host
from headshot.samples import astronaut_shots

# ---------------------------------------------------------------------------------------------
# Train Identity LoRA on a tiny random SD1 model: progress, cancel, resume, reuse, LoraLoader name


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import tiny_models

    folder = tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))
    return tiny_models.save_single_file(folder, tmp_path_factory.mktemp("ckpt") / "tiny_sd1.safetensors", "sd1")


@pytest.fixture
def tiny_dataset(comfy_host):
    root = comfy_host.base / "output" / "my_datasets" / "dataset"  # path widgets reach only ComfyUI's folders
    subset = root / "img" / "10_ohwx woman"
    subset.mkdir(parents=True)
    for i, name in enumerate(["astronaut.png", "astronaut_closeup.jpg", "astronaut_mirrored.jpg"]):
        astronaut_shots()[name].convert("RGB").resize((512, 512)).save(subset / f"{i:02d}.png")
        (subset / f"{i:02d}.txt").write_text("ohwx woman, orange spacesuit")
    (root / "report.json").write_text(json.dumps({"trigger": "ohwx", "class": "woman", "photos": []}))
    return root


def train_args(dataset, ckpt_name: str, **changes) -> dict:
    """Train Identity LoRA's inputs for a quick run on the tiny model (rank 4, 32 px, no validation pictures)."""
    args = dict(
        dataset_path=str(dataset),
        ckpt_name=ckpt_name,
        output_name="zoe",
        preset="fast",
        steps=2,
        rank=4,
        learning_rate=1e-3,
        resolution=32,
        training_seed=1,
        validation_images=0,
        face_backend="dlib",
    )
    return {**args, **changes}


def test_train_node_cancels_on_interrupt_resumes_then_reuses_the_finished_job(
    comfy_host, tiny_checkpoint, tiny_dataset, monkeypatch, caplog
):
    """On a checkpoint saved without its VAE (many merged ones are), with the VAE chosen from models/vae."""
    import logging

    from tiny_single_files import save_without_vae

    from headshot.train.job import JobFolder
    from headshot.train.lora_files import load_lora

    models = comfy_host.base / "models"
    save_without_vae(
        tiny_checkpoint, models / "checkpoints" / "tiny_sd1.safetensors", models / "vae" / "vae.safetensors"
    )
    cls = NODE_CLASS_MAPPINGS["HeadshotTrainLora"]
    assert cls.INPUT_TYPES()["required"]["ckpt_name"][0] == ["tiny_sd1.safetensors"]
    args = train_args(tiny_dataset, "tiny_sd1.safetensors", steps=40, vae_name="vae.safetensors")
    first_hash = cls.IS_CHANGED(**args)
    assert cls.IS_CHANGED(**args) == first_hash and cls.IS_CHANGED(**{**args, "rank": 8}) != first_hash

    kept = weakref.ref(common.face_analyzer("dlib"))  # a face node ran before: the pack keeps its analyzer
    comfy_host.state["interrupt_after_updates"] = 1  # press Cancel once training is under way
    with pytest.raises(InterruptProcessingException), caplog.at_level(logging.INFO):
        cls().train(**args)
    gc.collect()
    assert kept() is None  # dropped before the worker started: an onnxruntime CUDA session holds card memory
    # what the worker does before its first step shows in ComfyUI's console, not only a still progress bar
    assert "[Headshot Studio] loading base model" in caplog.text and "[Headshot Studio] training " in caplog.text
    assert comfy_host.calls[:2] == ["unload_all_models", "soft_empty_cache"]  # freed before the worker started
    job_dir = next((host.jobs_root() / "jobs").iterdir())
    record = JobFolder(job_dir).read()
    assert record["state"] == "cancelled" and 0 < record["steps_done"] < 40

    comfy_host.state["interrupt_after_updates"] = None
    result = cls().train(**args)  # resumes from the saved checkpoint
    _check_outputs(cls, result)
    lora_name, loss, samples, summary = result
    assert lora_name == os.path.join("headshot", "zoe.safetensors")
    assert lora_name in comfy_host.folder_paths.get_filename_list("loras")  # LoraLoader lists it
    installed = comfy_host.base / "models" / "loras" / lora_name
    assert installed.with_suffix(".identity.json").is_file() and installed.with_suffix(".json").is_file()
    record = JobFolder(job_dir).read()
    assert record["state"] == "done" and record["steps_done"] == 40
    assert any(e["type"] == "resumed" for e in JobFolder(job_dir).events()[0])
    assert "ohwx woman" in summary and samples.shape[0] == 1  # a note: validation was off
    assert load_lora(installed)[1]["ss_vae_name"] == "vae.safetensors"  # trained with the chosen VAE

    monkeypatch.setattr("headshot.train.launch.start_worker", lambda *a, **k: pytest.fail("trained again"))
    again = cls().train(**args)
    assert again[0] == lora_name and "reused the finished job" in again[3]
    (tiny_dataset / "img" / "10_ohwx woman" / "00.txt").write_text("ohwx woman, a new caption")
    assert cls.IS_CHANGED(**args) != first_hash  # a changed dataset file means training again


def test_train_node_lists_models_vae_and_refuses_a_checkpoint_without_a_vae_before_any_worker(
    comfy_host, tiny_checkpoint, tiny_dataset
):
    from tiny_single_files import save_without_vae

    from headshot.errors import HeadshotError

    models = comfy_host.base / "models"
    save_without_vae(
        tiny_checkpoint, models / "checkpoints" / "bare.safetensors", models / "vae" / "tiny_vae.safetensors"
    )
    cls = NODE_CLASS_MAPPINGS["HeadshotTrainLora"]
    assert cls.INPUT_TYPES()["optional"]["vae_name"][0] == ["Baked VAE", "tiny_vae.safetensors"]
    args = train_args(tiny_dataset, "bare.safetensors")
    with pytest.raises(HeadshotError) as caught:  # the checkpoint's own VAE: it has none
        cls().train(**args)
    assert caught.value.code == "checkpoint_without_vae" and "vae_name" in str(caught.value)
    assert not (host.jobs_root() / "jobs").exists()  # said before a job folder or a worker
    assert cls.IS_CHANGED(**args, vae_name="tiny_vae.safetensors") != cls.IS_CHANGED(**args)
    # training with the chosen VAE: the test above


def test_train_node_logs_a_worker_that_crashed_after_recording_its_end(comfy_host, tmp_path, caplog):
    import logging

    from train_fixtures import finished_run_whose_worker_aborted

    from comfy_nodes.training import follow

    run = finished_run_whose_worker_aborted(tmp_path / "job")
    with caplog.at_level(logging.WARNING):
        record = follow(run)
    assert record["state"] == "done"
    assert f"exit code {run.process.returncode}" in caplog.text and "[Headshot Studio]" in caplog.text


# ---------------------------------------------------------------------------------------------
# job routes on ComfyUI's server


def test_job_routes_register_on_promptserver_and_answer(comfy_host, monkeypatch, tmp_path):
    from comfy_nodes import routes
    from headshot.train.job import JobFolder

    registered = {}

    class StandInRoutes:  # STAND-IN for aiohttp's RouteTableDef on ComfyUI's PromptServer.instance
        def get(self, path):
            return lambda handler: registered.setdefault(("GET", path), handler)

        def post(self, path):
            return lambda handler: registered.setdefault(("POST", path), handler)

    assert routes.register_routes() is False  # no server module: nothing registered
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(routes=StandInRoutes()))
    monkeypatch.setitem(sys.modules, "server", server)
    assert routes.register_routes() is True
    assert set(registered) == {
        ("GET", "/headshot/jobs"),
        ("GET", "/headshot/jobs/{name}"),
        ("POST", "/headshot/jobs/{name}/cancel"),
    }

    web = types.SimpleNamespace(json_response=lambda body, status=200: (status, body))
    monkeypatch.setitem(sys.modules, "aiohttp", types.SimpleNamespace(web=web))  # STAND-IN: what a response holds

    def call(method, path, name=None, **query):  # a request as aiohttp hands it to the handler
        request = types.SimpleNamespace(match_info={"name": name}, rel_url=types.SimpleNamespace(query=query))
        return asyncio.run(registered[(method, path)](request))

    name = "zoe-0123456789ab"
    job = JobFolder(host.jobs_root() / "jobs" / name)
    job.write({"state": "running", "steps_done": 3})
    for step in range(1, 4):
        job.emit("step", step=step, total=10, loss=0.1)
    with job.lock():  # its worker, alive
        status, body = call("GET", "/headshot/jobs/{name}", name, events="2")
        assert status == 200 and body["job"]["state"] == "running" and [e["step"] for e in body["events"]] == [2, 3]
        listed = {"name": name, "state": "running", "steps_done": 3, "lora": None}
        assert call("GET", "/headshot/jobs") == (200, {"jobs": [listed]})
        cancelled = {"name": name, "cancel_requested": True, "state": "running"}
        assert call("POST", "/headshot/jobs/{name}/cancel", name) == (200, cancelled)
        assert job.cancel_requested()
    job.cancel_path.unlink()
    job.update(state="done")
    status, body = call("POST", "/headshot/jobs/{name}/cancel", name)
    assert status == 200 and not body["cancel_requested"] and not job.cancel_requested()
    status, body = call("GET", "/headshot/jobs/{name}", "../etc")
    assert status == 400 and "job name" in body["error"]
    status, body = call("GET", "/headshot/jobs/{name}", "nobody")
    assert status == 404 and "no training job called 'nobody'" in body["error"]
