"""Training jobs that trust nothing they read and lose nothing on a stop (issue 8, the training part).

Same tiny SD1 model and three-photo dataset as test_train.py, trained at 32 px. Tests that need a
real worker process or a real CLI process start one; the rest run the engine in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import _settings, dataset, sd1_folder  # noqa: F401  (fixtures)

from headshot import cli
from headshot.errors import HeadshotError
from headshot.outputs import FolderLock, pid_alive
from headshot.train import lora_files
from headshot.train.engine import LoraTrainer
from headshot.train.job import JobFolder
from headshot.train.launch import create_job, start_training
from headshot.train.settings import TrainSettings
from headshot.train.worker import run_job


def _stop_after_first_checkpoint(job: JobFolder) -> JobFolder:
    """Make `job` ask itself to stop as soon as a checkpoint is written (as a cancel at that moment would)."""
    emit = job.emit

    def emit_then_stop(kind, **fields):
        if kind == "checkpoint":
            job.request_cancel()
        return emit(kind, **fields)

    job.emit = emit_then_stop
    return job


@pytest.fixture
def stopped_job(sd1_folder, dataset, tmp_path):
    """A job stopped after its checkpoint at step 2 of 4, recorded as the worker records it."""
    settings = _settings(dataset, sd1_folder, tmp_path / "job", steps=4, checkpoint_every=2)
    job = _stop_after_first_checkpoint(create_job(settings))
    assert run_job(job) == 0
    record = job.read()
    assert record["state"] == "cancelled" and record["steps_done"] == 2
    return settings, JobFolder(job.path)


@pytest.fixture(scope="module")
def straight_run(sd1_folder, dataset, tmp_path_factory):
    """The LoRA of an uninterrupted 4-step run, to compare resumed runs with."""
    settings = _settings(dataset, sd1_folder, tmp_path_factory.mktemp("straight"), steps=4, checkpoint_every=2)
    result = LoraTrainer(settings, create_job(settings)).run()
    return lora_files.load_lora(result["lora"])[0]


def _same_lora(path, expected) -> None:
    tensors, _ = lora_files.load_lora(path)
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)


def _cli(capsys, *args) -> tuple[int, str]:
    code = cli.main(["train", *map(str, args)])
    return code, capsys.readouterr().err


def _base_args(dataset, sd1_folder, out, resolution=True):
    return [
        dataset,
        "--base-model",
        sd1_folder,
        "--out",
        out,
        *(["--resolution", "32"] if resolution else []),
        "--rank",
        "4",
        "--validation-images",
        "0",
        "--face-backend",
        "dlib",
        "--device",
        "cpu",
    ]


# -- item 1: no code from data -----------------------------------------------------------------


def test_checkpoints_hold_safetensors_and_json_and_resume_exactly(stopped_job, straight_run):
    settings, job = stopped_job
    step, folder = job.checkpoints()[-1]
    assert step == 2
    assert sorted(p.name for p in folder.iterdir()) == ["lora.safetensors", "state.json", "state.safetensors"]
    state = json.loads((folder / "state.json").read_text())
    tensors = load_file(folder / "state.safetensors")
    assert state["step"] == 2 and state["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999]
    assert any(k.startswith("optimizer.state.0.exp_avg") for k in tensors) and "rng.generator" in tensors
    job = create_job(settings, resume=True)
    result = LoraTrainer(TrainSettings.from_dict(job.read()["settings"]), job).run()  # resumes at step 2
    _same_lora(result["lora"], straight_run)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling this creates the marker file


def test_a_pickled_state_pt_from_an_older_version_is_never_loaded(sd1_folder, dataset, tmp_path):
    settings = _settings(dataset, sd1_folder, tmp_path / "job", steps=4, checkpoint_every=2)
    job = create_job(settings)
    old = job.checkpoint_dir(2)
    old.mkdir(parents=True)
    (old / "lora.safetensors").write_bytes(b"")
    marker = tmp_path / "code-ran"
    torch.save({"step": 2, "lora": [], "payload": _RunsCodeWhenUnpickled(marker)}, old / "state.pt")
    with pytest.raises(HeadshotError) as caught:
        LoraTrainer(settings, job).run()
    assert "older version and is not loaded for safety" in str(caught.value)
    assert not marker.exists()


def test_a_moved_job_folder_resumes_where_it_now_is(stopped_job, sd1_folder, dataset, tmp_path, straight_run):
    settings, job = stopped_job
    record = job.read()
    record["settings"]["dataset_dir"] = str(tmp_path / "not-the-dataset")  # job.json is data: not followed
    job.write(record)
    moved = tmp_path / "elsewhere" / "job"
    shutil.move(str(job.path), str(moved))
    resumed = start_training(_settings(dataset, sd1_folder, moved, steps=4, checkpoint_every=2), resume=True).wait()
    assert resumed["state"] == "done", resumed.get("error")
    assert not job.path.exists(), "nothing was written where the folder used to be"
    assert JobFolder(moved).lora_path(resumed) == moved / "headshot_lora.safetensors"
    _same_lora(moved / "headshot_lora.safetensors", straight_run)


# -- item 2: --name stays inside --out -----------------------------------------------------------


def test_a_name_that_leaves_out_is_refused_before_anything_is_written(sd1_folder, dataset, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "out"
    code, err = _cli(capsys, *_base_args(dataset, sd1_folder, out), "--steps", "1", "--name", "../../victim")
    assert code == 1 and "--name" in err
    assert not (tmp_path / "a").exists()
    with pytest.raises(HeadshotError, match="--name"):
        _settings(dataset, sd1_folder, out, output_name="../x").validate()  # what hosts call


# -- items 4 and 8: options and folders checked first ----------------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [
        ("--steps", "0"),
        ("--checkpoint-every", "0"),
        ("--seed", "-1"),
        ("--seed", str(2**32)),
        ("--resolution", "4096"),
        ("--resolution", "100"),
        ("--rank", "0"),
        ("--alpha", "0"),
        ("--lr", "0"),
        ("--warmup-steps", "-1"),
        ("--class-image-count", "-1"),
    ],
)
def test_a_bad_option_is_one_line_exit_1_and_nothing_created(sd1_folder, dataset, tmp_path, capsys, option, value):
    out = tmp_path / "out"
    args = _base_args(dataset, sd1_folder, out, resolution=option != "--resolution")
    args += [] if option == "--steps" else ["--steps", "1"]
    code, err = _cli(capsys, *args, option, value)
    assert code == 1 and option in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("what", ["dataset", "base model"])
def test_a_missing_input_is_named_before_anything_is_created(sd1_folder, dataset, tmp_path, capsys, what):
    out = tmp_path / "out"
    missing = tmp_path / "missing"
    args = _base_args(missing if what == "dataset" else dataset, missing if what == "base model" else sd1_folder, out)
    code, err = _cli(capsys, *args, "--steps", "1")
    assert code == 1 and str(missing) in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_an_out_that_cannot_be_written_fails_before_the_worker_starts(sd1_folder, dataset, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    code, err = _cli(capsys, *_base_args(dataset, sd1_folder, blocker / "out"), "--steps", "1")
    assert code == 1 and "--out" in err
    assert blocker.read_text() == "mine"


def test_job_json_is_written_atomically(sd1_folder, dataset, tmp_path, monkeypatch):
    job = create_job(_settings(dataset, sd1_folder, tmp_path / "job"))
    before = job.record_path.read_bytes()

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: full_disk(self, None))
    with pytest.raises(HeadshotError, match="disk is full"):
        job.update(state="running")
    monkeypatch.undo()
    assert job.record_path.read_bytes() == before
    assert sorted(p.name for p in job.path.iterdir() if not p.name.startswith(".headshot.lock")) == ["job.json"]


def test_the_lora_never_takes_the_name_of_someone_elses_file(sd1_folder, dataset, tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    (out / "headshot_lora.json").write_text("my notes")  # would be the A1111 sidecar's name
    settings = _settings(dataset, sd1_folder, out, steps=2)
    with pytest.raises(HeadshotError, match="was not written by Headshot Studio"):
        LoraTrainer(settings, create_job(settings)).run()
    assert (out / "headshot_lora.json").read_text() == "my notes" and not JobFolder(out).checkpoints()


# -- item 7: a typo does not block a folder ---------------------------------------------------------


def test_a_job_that_failed_before_its_first_step_starts_again_keeping_other_files(sd1_folder, dataset, tmp_path):
    out = tmp_path / "job"
    job = create_job(_settings(dataset, sd1_folder, out, rank=4))
    job.emit("error", message="a typo")
    job.update(state="failed", error="a typo")
    (out / "notes.txt").write_text("mine")
    again = create_job(_settings(dataset, sd1_folder, out, rank=8))
    assert again.read()["settings"]["rank"] == 8 and again.read()["state"] == "queued"
    assert not again.events_path.exists() and (out / "notes.txt").read_text() == "mine"


def test_resume_applies_what_may_change_and_names_what_may_not(stopped_job, sd1_folder, dataset, capsys):
    settings, job = stopped_job
    with pytest.raises(HeadshotError) as caught:
        create_job(_settings(dataset, sd1_folder, job.path, rank=8, resolution=64, steps=6), resume=True)
    message = str(caught.value)
    assert "--rank (was 4, now 8)" in message and "--resolution (was 32, now 64)" in message
    assert "--steps" not in message
    with pytest.raises(HeadshotError, match="already trained 2 steps"):
        create_job(_settings(dataset, sd1_folder, job.path, steps=1), resume=True)
    code, err = _cli(capsys, dataset, "--base-model", sd1_folder, "--out", job.path, "--resume", "--alpha", "16")
    assert code == 1 and "--alpha (was 4.0, now 16.0)" in err
    create_job(
        _settings(dataset, sd1_folder, job.path, steps=6, checkpoint_every=3, device="cpu"),
        resume=True,
        given={"dataset_dir", "base_model", "out_dir", "steps", "checkpoint_every"},
    )
    resumed = job.read()["settings"]
    assert resumed["steps"] == 6 and resumed["checkpoint_every"] == 3 and resumed["rank"] == 4


# -- item 5: one writer per job folder; no job stuck "running" ----------------------------------


def test_a_job_left_running_by_a_dead_process_is_repaired_when_read(sd1_folder, dataset, tmp_path):
    job = create_job(_settings(dataset, sd1_folder, tmp_path / "job"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job.update(state="running", worker_pid=gone.pid)
    record = job.status()
    assert record["state"] == "failed" and record["error_code"] == "interrupted" and str(gone.pid) in record["error"]
    job.update(worker_exit_warning="the worker process ended with exit code -6 after recording the job as done")
    resumed = create_job(_settings(dataset, sd1_folder, tmp_path / "job"), resume=True).read()
    assert resumed["state"] == "queued"
    assert not {"error", "error_code", "worker_exit_warning"} & resumed.keys()  # the last worker's, not the next's


def test_a_running_job_is_never_repaired_or_replaced(sd1_folder, dataset, tmp_path):
    job = create_job(_settings(dataset, sd1_folder, tmp_path / "job"))
    job.update(state="running", worker_pid=None)
    with FolderLock(job.path, "training job"):  # what a live worker holds
        assert JobFolder(job.path).status()["state"] == "running"


def _cli_process(args: list, logs: Path) -> subprocess.Popen:
    """`headshot train` in a session of its own (as a terminal runs it); its output goes to files."""
    with open(logs / "stdout.txt", "w") as stdout, open(logs / "stderr.txt", "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "headshot", "train", *map(str, args)],
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )


def _end_session(command: subprocess.Popen) -> None:
    """Whatever the test found, leave no process of it behind (the worker shares the command's group)."""
    try:
        os.killpg(command.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    command.wait()


def _wait_for_steps(out: Path, steps: int, process: subprocess.Popen | None = None, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            record = JobFolder(out).read()
        except HeadshotError:
            record = {}
        if record.get("state") == "running" and (record.get("steps_done") or 0) >= steps:
            return record
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the command ended ({process.returncode}) before step {steps}")
        time.sleep(0.1)
    raise AssertionError(f"no step {steps} within {timeout}s: {(out / 'worker.log').read_text()}")


def _wait_gone(pid: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not pid_alive(pid)


def test_a_second_train_into_a_busy_folder_fails_at_once_naming_the_worker(sd1_folder, dataset, tmp_path):
    out = tmp_path / "job"
    run = start_training(_settings(dataset, sd1_folder, out, steps=5000, checkpoint_every=5000))
    try:
        _wait_for_steps(out, 1)
        for extra in (["--resume"], []):
            second = _cli_process(_base_args(dataset, sd1_folder, out) + ["--steps", "5000", *extra], tmp_path)
            try:
                assert second.wait(timeout=60) == 1, "a second writer was let in"
            finally:
                _end_session(second)
            err = (tmp_path / "stderr.txt").read_text()
            assert f"process {run.process.pid}" in err and len(err.strip().splitlines()) == 1, err
    finally:
        run.cancel()
        record = run.wait()
    assert record["state"] == "cancelled" and record["steps_done"] < 5000


def test_killing_the_command_stops_its_worker_after_a_checkpoint(sd1_folder, dataset, tmp_path):
    out = tmp_path / "job"
    command = _cli_process(
        _base_args(dataset, sd1_folder, out) + ["--steps", "5000", "--checkpoint-every", "5000"], tmp_path
    )
    try:
        worker = _wait_for_steps(out, 2, command)["worker_pid"]
        command.kill()  # SIGKILL: the command gets no chance to pass anything on
        command.wait()
        assert _wait_gone(worker), "the worker trained on after its command was killed"
    finally:
        _end_session(command)
    record = JobFolder(out).read()
    assert record["state"] == "cancelled" and "ended" in record["stopped_because"]
    assert JobFolder(out).checkpoints()[-1][0] == record["steps_done"] >= 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_the_process_group_saves_a_checkpoint_and_exits(sd1_folder, dataset, tmp_path, sig):
    out = tmp_path / "job"
    command = _cli_process(
        _base_args(dataset, sd1_folder, out) + ["--steps", "5000", "--checkpoint-every", "5000"], tmp_path
    )
    try:
        _wait_for_steps(out, 2, command)
        os.killpg(command.pid, sig)  # what a terminal's Ctrl-C (or closing it, or `kill`) does
        command.wait(timeout=120)
    finally:
        _end_session(command)
    stdout, stderr = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    assert command.returncode == 128 + sig, stdout + stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in (out / "worker.log").read_text()
    record = JobFolder(out).read()
    assert record["state"] == "cancelled" and sig.name in record["stopped_because"]
    assert JobFolder(out).checkpoints()[-1][0] == record["steps_done"] >= 2
    assert "--resume" in stdout
