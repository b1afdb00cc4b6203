"""`headshot sweep --queue`: the baseline and each run go to the service's queue as independent tasks, two real
`headshot worker` processes on one huey SQLite queue (a file both processes open) take them; run again, every run
is reused, nothing retrained; and the local path, run on the same folder, takes every queued run and picture as its
own (same folders, same keys) and writes a sweep.json of the same shape.

The tiny SD1 model (two runs of two steps at 64 px, one picture each) proves the wiring, not picture quality."""

from __future__ import annotations

import json

import pytest
from service_processes import HeadshotProcess, wait_until

from headshot.cli import main
from headshot.evaluate.sweep_record import METRIC_KEYS
from headshot.service.db import Store
from tests.test_sweep import tiny  # noqa: F401  (the fixture: the tiny model and a two-photo dataset)

pytest.importorskip("huey", reason="the queue needs pip install 'headshot-studio[service]'")


def _sweep_args(tiny, out, *extra):
    args = ["sweep", tiny["data"], "--base-model", tiny["base"], "--lr", "1e-4,1e-3", "--steps", "2", "--rank", "4"]
    args += ["--resolution", "64", "--count", "1", "--size", "64x64", "--sample-steps", "2", "--device", "cpu"]
    return [str(a) for a in [*args, "--face-backend", "dlib", "--out", out, "--no-report", *extra]]


def _shape(document: dict) -> dict:
    """What must match between the two paths: keys, settings, states, the folders named, the metric names."""

    def entry(e: dict) -> dict:
        return {
            "keys": sorted(set(e) - {"reused"}),
            "settings": e["settings"],
            "state": e["state"],
            "paths": [e.get(k) for k in ("job", "pictures", "evaluation")],
            "metrics": sorted(e["metrics"] or {}),
            "images": (e["metrics"] or {}).get("images"),
        }

    header = {k: v for k, v in document.items() if k not in ("runs", "baseline", "dataset", "base_model")}
    return {"header": header, "runs": [entry(r) for r in document["runs"]], "baseline": entry(document["baseline"])}


def test_queued_sweep_runs_on_two_workers_and_writes_what_the_local_sweep_writes(tiny, tmp_path, capsys):
    queued_out, data = tmp_path / "queued" / "sweep", tmp_path / "service"
    data.mkdir()
    Store(f"sqlite:///{data / 'service.db'}")  # the workers' job records, made once: two first starts would race
    queue = f"sqlite:///{data / 'queue.db'}"
    common = ["--data", data, "--base-model", tiny["base"], "--queue", queue, "--device", "cpu"]
    workers = [HeadshotProcess(["worker", *common], tmp_path / f"worker-{n}.log") for n in (1, 2)]
    try:
        for w in workers:
            wait_until(lambda w=w: "Huey consumer started" in w.log(), 120, "a worker did not start", w.log)
        assert main(_sweep_args(tiny, queued_out, "--queue", queue)) == 0
        first_err = capsys.readouterr().err
        queued = json.loads((queued_out / "sweep.json").read_text())
        ran_by = {json.loads(p.read_text())["worker"].rpartition(":")[2] for p in (queued_out / "queue").glob("*.json")}
        checkpoints = {p: p.stat().st_mtime_ns for p in queued_out.rglob("*.safetensors")}
        # the same command again: every run's job and pictures are found finished and reused
        assert main(_sweep_args(tiny, queued_out, "--queue", data)) == 0  # the workers' --data folder works too
        again_err = capsys.readouterr().err
        again = json.loads((queued_out / "sweep.json").read_text())
    finally:
        for w in workers:
            w.stop(grace=20)
    logs = "\n".join(w.log() for w in workers)
    assert all(r["state"] == "done" and (queued_out / r["lora"]).is_file() for r in queued["runs"]), logs
    assert all(set(r["metrics"]) >= set(METRIC_KEYS) for r in queued["runs"])
    assert ran_by == {str(w.pid) for w in workers}, (ran_by, logs)  # both workers took tasks
    assert "eta" in first_err and "queued 3 task(s)" in first_err
    assert all(r["reused"] for r in again["runs"]) and "training step" not in again_err
    assert {p: p.stat().st_mtime_ns for p in queued_out.rglob("*.safetensors")} == checkpoints
    assert [r["train_seconds"] for r in again["runs"]] == [r["train_seconds"] for r in queued["runs"]]
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in queued["runs"]]

    # the local path finds every queued job and picture where it looks for its own: nothing trains or draws again
    assert main(_sweep_args(tiny, queued_out)) == 0
    local_err = capsys.readouterr().err
    local = json.loads((queued_out / "sweep.json").read_text())
    assert all(r["reused"] for r in local["runs"]) and "training step" not in local_err
    assert local_err.count("reused the measured pictures") == 1 + len(local["runs"])  # the baseline's too
    assert _shape(local) == _shape(queued)
    assert {p: p.stat().st_mtime_ns for p in queued_out.rglob("*.safetensors")} == checkpoints


def test_queue_option_is_checked_before_any_model_loads(tiny, tmp_path, capsys):
    empty = tmp_path / "not_a_service"
    empty.mkdir()
    assert main(_sweep_args(tiny, tmp_path / "out", "--queue", str(empty))) == 1
    err = capsys.readouterr().err
    assert "error (bad_option)" in err and "no queue.db" in err
    assert not (tmp_path / "out").exists()
