"""A sweep whose runs are queued jobs: the baseline and each run (train, draw, measure) go to the service's queue
as independent tasks, any `headshot worker` takes them (several GPUs at once), and this process follows them and
writes sweep.json exactly as a local sweep does.

The queue carries the whole plan (folders already named), so a worker never plans again. Workers and the sweep
share the sweep folder (shared storage, as the service's --data): a worker writes OUT/queue/<task>.json (its
progress, then the run's entry) and holds the lock OUT/queue/<task>/ while it works. A lock that is free under
a "running" status is a worker that died: the task is queued again (its job resumes from its checkpoint).
Finished work is reused by the same functions as the local path, so running the command again resumes.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

from ..errors import HeadshotError
from ..evaluate.sweep_progress import SweepProgress, SweepProgressCallback
from ..evaluate.sweep_record import SweepRecord, read_json, relative
from ..outputs import FolderBusy, FolderLock, atomic_write_json
from .methods import method_fields
from .plan import PlannedRun, SweepOptions, SweepPlan

# the local path's steps, so a queued run records exactly what a local one does
from .runner import (
    SweepModels,
    _event_seconds,
    _failed,
    _header,
    _pictures_and_metrics,
    _train,
    _trained_entry,
    _untrained_entry,
    baseline_entry,
)

log = logging.getLogger("headshot.sweep")
STATUS_FOLDER = "queue"
BASELINE = "baseline"
BUSY_WAIT_S = 5.0
#: (task message) -> None: puts one task on the queue
Submit = Callable[[dict], None]


def _to_data(value):
    """Paths as text, tuples as lists: JSON for the queue."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_to_data(v) for v in value]
    return value


def _from_data(value, annotation: str):
    """Back from JSON by the field's annotation (`Path | None`, `list[Path]`, `tuple[int, int] | None`)."""
    if value is None:
        return None
    if annotation.startswith("list[Path]"):
        return [Path(v) for v in value]
    if "Path" in annotation and isinstance(value, str):
        return Path(value)
    if annotation.startswith("tuple"):
        return tuple(value)
    return value


def _fields_to_data(obj, skip=()) -> dict:
    return {f.name: _to_data(getattr(obj, f.name)) for f in fields(obj) if f.name not in skip}


def _fields_from_data(cls, data: dict, skip=()) -> dict:
    return {f.name: _from_data(data[f.name], str(f.type)) for f in fields(cls) if f.name in data and f.name not in skip}


def plan_to_message(plan: SweepPlan) -> dict:
    """The plan as JSON-able data (paths as text), for a worker on any machine that sees the same folders."""
    runs = []
    for run in plan.runs:
        data = _fields_to_data(run, skip=("train",))
        data["train"] = run.train.to_dict() if run.train is not None else None
        runs.append(data)
    return {
        **_fields_to_data(plan, skip=("options", "runs")),
        "options": _fields_to_data(plan.options),
        "runs": runs,
    }


def plan_from_message(data: dict) -> SweepPlan:
    from ..train.settings import TrainSettings

    runs = []
    for run in data["runs"]:
        train = TrainSettings.from_dict(run["train"]) if run.get("train") is not None else None
        runs.append(PlannedRun(train=train, **_fields_from_data(PlannedRun, run, skip=("train",))))
    options = SweepOptions(**_fields_from_data(SweepOptions, data["options"]))
    return SweepPlan(options=options, runs=runs, **_fields_from_data(SweepPlan, data, skip=("options", "runs")))


def _batch_units(plan: SweepPlan) -> float:
    return plan.pictures_per_run * max(1.0, (plan.options.sample_steps or 20) / 2)


def _task_name(plan: SweepPlan, index: int | None) -> str:
    return BASELINE if index is None else plan.runs[index].name


def run_queued_sweep(
    plan: SweepPlan,
    submit: Submit,
    progress: SweepProgressCallback | None = None,
    poll_s: float = 0.5,
    check_workers_s: float = 10.0,
    waiting_note_s: float = 30.0,
) -> tuple[dict, list[str]]:
    """Queue the baseline and every run of `plan`, follow them to the end; returns sweep.json's document and the
    warnings, as `run_sweep` does."""
    out = plan.options.out
    with FolderLock(out, "sweep folder"):
        record = SweepRecord(out, _header(plan))
        record.document["runs"] = [
            {"settings": run.settings, "state": "pending", "job": relative(run.job_dir, out)} for run in plan.runs
        ]
        units = _batch_units(plan)
        tracker = SweepProgress(sum(run.steps_estimate for run in plan.runs) + units * (len(plan.runs) + 1), progress)
        status_dir = out / STATUS_FOLDER
        status_dir.mkdir(parents=True, exist_ok=True)
        plan_data = plan_to_message(plan)
        tasks: dict[str, int | None] = {BASELINE: None, **{run.name: i for i, run in enumerate(plan.runs)}}
        messages = {}
        for name, index in tasks.items():
            (status_dir / f"{name}.json").unlink(missing_ok=True)  # an earlier invocation's: ours to replace
            job_dir = plan.runs[index].job_dir if index is not None else None
            earlier = record.earlier_entry(job_dir) if job_dir is not None else {}
            messages[name] = {
                "plan": plan_data,
                "index": index,
                "earlier": {k: earlier.get(k) for k in ("state", "train_seconds")},
            }
            submit(messages[name])
        tracker.note(f"queued {len(tasks)} task(s) (the baseline and {len(plan.runs)} run(s)); waiting for workers")
        seen = {name: (0.0, 0.0) for name in tasks}
        warnings: list[str] = []
        pending, started, last_check, taken = set(tasks), time.monotonic(), time.monotonic(), False
        while pending:
            check = time.monotonic() - last_check >= check_workers_s
            for name in sorted(pending):
                status = read_json(status_dir / f"{name}.json")
                if status is None:
                    continue
                taken = True
                _follow(tracker, seen, name, status)
                if status.get("state") in ("done", "failed") and isinstance(status.get("entry"), dict):
                    index = tasks[name]
                    if index is None:
                        record.set_baseline(status["entry"])
                    else:  # as the local path's save()
                        record.set_run(index, {**status["entry"], **method_fields(plan, plan.runs[index])})
                    warnings += [w for w in status.get("warnings") or [] if w not in warnings]
                    pending.discard(name)
                elif check and _worker_died(status_dir, name):
                    tracker.note(f"{name}: its worker ({status.get('worker')}) stopped; queued again")
                    (status_dir / f"{name}.json").unlink(missing_ok=True)
                    seen[name] = (0.0, 0.0)
                    submit(messages[name])
            if check:
                last_check = time.monotonic()
            if not taken and time.monotonic() - started > waiting_note_s:
                tracker.note("no worker has taken a task yet: start `headshot worker` on this queue")
                started = time.monotonic()
            if pending:
                time.sleep(poll_s)
        tracker.note(f"done: {record.path}")
        return record.document, warnings


def _follow(tracker: SweepProgress, seen: dict, name: str, status: dict) -> None:
    """Add a task's new progress to the sweep's: reused work as done, worked units as pace."""
    done, worked = float(status.get("done") or 0), float(status.get("worked") or 0)
    last_done, last_worked = seen[name]
    if done <= last_done and status.get("state") == "running":
        return
    seen[name] = (max(done, last_done), max(worked, last_worked))
    message = f"{status.get('message') or name} [{status.get('worker')}]"
    new_work = max(0.0, worked - last_worked)
    if done - last_done - new_work > 0:
        tracker.skip(done - last_done - new_work, message)
    if new_work:
        tracker.advance(new_work, message, force=True)


def _worker_died(status_dir: Path, name: str) -> bool:
    """A "running" status whose lock is free: the worker that wrote it is gone (the OS freed its lock)."""
    try:
        lock = FolderLock(status_dir / name, "sweep task").acquire()
    except FolderBusy:
        return False
    try:
        status = read_json(status_dir / f"{name}.json") or {}
        return status.get("state") == "running"  # read again under the lock: it may have just finished
    finally:
        lock.release()


def run_queued_task(message: dict) -> None:
    """A worker's side: the baseline or one run of the plan, its progress and entry in OUT/queue/<task>.json."""
    plan = plan_from_message(message["plan"])
    index = message.get("index")
    name = _task_name(plan, index)
    status_dir = plan.options.out / STATUS_FOLDER
    try:
        lock = FolderLock(status_dir / name, "sweep task").acquire()
    except FolderBusy:  # a duplicate message: the worker that holds it writes the result
        log.info("sweep task %s is taken by another worker", name)
        return
    worker = f"{socket.gethostname()}:{os.getpid()}"
    status_path = status_dir / f"{name}.json"
    units = _batch_units(plan) + (plan.runs[index].steps_estimate if index is not None else 0)

    def report(fraction: float, line: str, eta: float | None) -> None:
        atomic_write_json(
            status_path,
            {"state": "running", "done": tracker.done, "worked": tracker.worked, "message": line, "worker": worker},
        )

    tracker = SweepProgress(units, report)
    models = SweepModels(plan)
    try:
        tracker.note(f"{name}: taken")
        try:
            entry = _run_task(plan, index, models, tracker, message.get("earlier") or {})
        except Exception as exc:  # a crash must end this task in sweep.json, never leave the sweep waiting
            log.exception("sweep task %s crashed", name)
            code = exc.code if isinstance(exc, HeadshotError) else "job_crashed"
            text = str(exc) if isinstance(exc, HeadshotError) else f"{type(exc).__name__}: {exc}"
            entry = _crashed_entry(plan, index, text, code)
        state = "done" if entry.get("state") == "done" else "failed"
        atomic_write_json(
            status_path,
            {
                "state": state,
                "done": units,
                "worked": tracker.worked,
                "message": f"{name}: {state}",
                "worker": worker,
                "entry": entry,
                "warnings": models.warnings,
            },
        )
    finally:
        _free(models)
        lock.release()


def _run_task(plan: SweepPlan, index: int | None, models: SweepModels, tracker: SweepProgress, earlier: dict) -> dict:
    out = plan.options.out
    if index is None:
        folder = plan.pictures_dir(BASELINE)
        metrics, evaluation = _pictures_and_metrics(plan, models, folder, None, plan.trigger, tracker, BASELINE)
        return baseline_entry(out, folder, metrics, evaluation)
    run = plan.runs[index]
    where = f"run {index + 1}/{len(plan.runs)} ({run.name})"
    lora = None
    if run.train is None:  # the adapter alone: nothing to train
        entry = _untrained_entry(run)
    else:
        while True:
            try:
                trained, seconds = _train(plan, run, tracker, where)
                break
            except FolderBusy:  # another task trains the same job (a method study's lora+adapter): wait for it
                tracker.note(f"{where}: its job is in use by another task; waiting")
                time.sleep(BUSY_WAIT_S)
            except HeadshotError as exc:
                return _failed(run, out, exc)
        if trained.reused:
            seconds = earlier.get("train_seconds") if earlier.get("state") == "done" else _event_seconds(run.train_dir)
        entry, lora = _trained_entry(plan, run, trained, seconds), trained.lora
    folder = plan.pictures_dir(run.pictures_name or run.name)
    trigger = run.settings.get("trigger") or plan.trigger
    try:
        metrics, evaluation = _pictures_and_metrics(
            plan, models, folder, lora, trigger, tracker, where, identity=run.identity
        )
    except HeadshotError as exc:
        return {**entry, "state": "failed", "error": str(exc), "error_code": exc.code}
    entry.update(state="done", pictures=relative(folder, out), evaluation=relative(evaluation, out), metrics=metrics)
    return entry


def _crashed_entry(plan: SweepPlan, index: int | None, text: str, code: str) -> dict:
    out = plan.options.out
    run = plan.runs[index] if index is not None else None
    if run is None or run.train is None:
        settings = run.settings if run is not None else {}
        return {"settings": settings, "lora": None, "job": None, "state": "failed", "metrics": None, "error": text,
                "error_code": code}  # fmt: skip
    return _failed(run, out, HeadshotError(text, code))


def _free(models: SweepModels) -> None:
    """Let go of the task's models before the next task trains on the same accelerator."""
    models.__dict__.clear()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
