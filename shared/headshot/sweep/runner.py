"""Running a sweep: first every run's training (each its own resumable job, trained by the builtin engine in a
worker process), then one sampler loaded once draws the baseline and every run's pictures (the LoRA swapped
per run), and each batch is measured. sweep.json is rewritten after each step, so an interrupted sweep keeps
what finished, and the same command run again reuses it.

Training comes first so the sampler never holds the base model while a worker trains on the same
accelerator (two copies of a checkpoint in memory is the commonest out-of-memory).
"""

from __future__ import annotations

import json
import shutil
import time
from functools import cached_property
from pathlib import Path

from ..errors import HeadshotError
from ..evaluate.sweep_progress import SweepProgress, SweepProgressCallback
from ..evaluate.sweep_record import METRIC_KEYS, SweepRecord, final_loss, metrics_of, read_json, relative
from ..outputs import FolderLock
from ..train import job_reuse
from ..train.launch import TrainingRun
from .methods import SINGLE_PHOTO_LORA, identity_for, make_single_photo_dataset, method_fields, method_header
from .plan import PlannedRun, SweepPlan
from .variants import trigger_variant

EVALUATION = "evaluation.json"


class SweepModels:
    """The models a sweep's pictures need, each loaded once, at its first use (a sweep whose every batch is
    already measured loads none)."""

    def __init__(self, plan: SweepPlan):
        self.plan = plan
        self.warnings: list[str] = []

    @cached_property
    def sampler(self):
        from ..sampling.diffusers_sampler import DiffusersSampler

        options = self.plan.options
        return DiffusersSampler(
            options.base_model, tokenizer_dirs=options.tokenizer_dirs, device=options.device, vae=options.vae
        )

    @cached_property
    def dlib(self):
        from ..faces import load_face_analyzer

        return load_face_analyzer("dlib")

    @cached_property
    def arcface(self):
        from ..faces import FACE_BACKENDS

        backend = self.plan.options.face_backend
        if backend == "dlib":
            return None
        dirs = [Path(d).expanduser() for d in self.plan.options.face_model_dirs]
        return FACE_BACKENDS["insightface"](dirs, backend == "insightface")

    @cached_property
    def clip(self):
        from ..evaluate.clip_model import load_clip_scorer

        if self.plan.clip_dir is None:
            self.warnings.append(
                f"no CLIP model found (searched {self.plan.clip_searched}); clip_score is null. Give --clip-model DIR"
            )
            return None
        return load_clip_scorer(self.plan.clip_dir)

    @cached_property
    def identity(self):
        """The reference photo's FaceID identity (a method study's adapter runs)."""
        return identity_for(self.plan, self.arcface)

    @cached_property
    def reference(self):
        from ..evaluate.reference_faces import load_reference

        return load_reference(self.plan.options.dataset, self.dlib, self.arcface)


def run_sweep(plan: SweepPlan, progress: SweepProgressCallback | None = None) -> tuple[dict, list[str]]:
    """Train, draw and measure every run of `plan` (reusing what is finished); returns sweep.json's document
    and the warnings. A run that fails is recorded with its error and the sweep goes on."""
    out = plan.options.out
    with FolderLock(out, "sweep folder"):
        record = SweepRecord(out, _header(plan))

        def save(index: int, entry: dict) -> None:
            record.set_run(index, {**entry, **method_fields(plan, plan.runs[index])})

        record.document["runs"] = [
            {"settings": run.settings, "state": "pending", "job": relative(run.job_dir, out)} for run in plan.runs
        ]
        picture_units = max(1.0, (plan.options.sample_steps or 20) / 2)
        batch_units = plan.pictures_per_run * picture_units
        tracker = SweepProgress(
            sum(run.steps_estimate for run in plan.runs) + batch_units * (len(plan.runs) + 1), progress
        )
        models = SweepModels(plan)
        trained: dict[int, job_reuse.TrainedLora] = {}
        job_seconds: dict[str, float | None] = {}
        for index, run in enumerate(plan.runs):
            where = f"run {index + 1}/{len(plan.runs)} ({run.name})"
            if run.train is None:  # the adapter alone: nothing to train
                save(index, _untrained_entry(run))
                continue
            earlier = record.earlier_entry(run.train_dir)
            try:
                trained[index], seconds = _train(plan, run, tracker, where)
            except HeadshotError as exc:
                save(index, _failed(run, out, exc))
                tracker.skip(run.steps_estimate + batch_units, f"{where}: failed: {exc}")
                continue
            if run.name in job_seconds:  # a job an earlier run of this sweep trained (lora, then lora+adapter)
                seconds = job_seconds[run.name]
            elif trained[index].reused:
                seconds = (
                    earlier.get("train_seconds") if earlier.get("state") == "done" else _event_seconds(run.train_dir)
                )
            job_seconds[run.name] = seconds
            save(index, _trained_entry(plan, run, trained[index], seconds))

        baseline_dir = plan.pictures_dir("baseline")
        metrics, evaluation = _pictures_and_metrics(plan, models, baseline_dir, None, plan.trigger, tracker, "baseline")
        record.set_baseline(baseline_entry(out, baseline_dir, metrics, evaluation))
        for index, run in enumerate(plan.runs):
            if index not in trained and run.train is not None:
                continue  # its training failed
            where = f"run {index + 1}/{len(plan.runs)} ({run.name})"
            entry = dict(record.document["runs"][index])
            folder = plan.pictures_dir(run.pictures_name or run.name)
            trigger = run.settings.get("trigger") or plan.trigger
            lora = trained[index].lora if index in trained else None
            try:
                metrics, evaluation = _pictures_and_metrics(
                    plan, models, folder, lora, trigger, tracker, where, identity=run.identity
                )
            except HeadshotError as exc:
                save(index, {**entry, "state": "failed", "error": str(exc), "error_code": exc.code})
                continue
            entry.update(
                state="done", pictures=relative(folder, out), evaluation=relative(evaluation, out), metrics=metrics
            )
            save(index, entry)
        tracker.note(f"done: {record.path}")
        return record.document, models.warnings


def baseline_entry(out: Path, folder: Path, metrics: dict, evaluation: Path) -> dict:
    return {
        "settings": {},
        "lora": None,
        "job": None,
        "state": "done",
        "pictures": relative(folder, out),
        "evaluation": relative(evaluation, out),
        "metrics": metrics,
        "final_loss": None,
        "train_seconds": None,
    }


def _header(plan: SweepPlan) -> dict:
    options = plan.options
    seeds = list(range(options.seed, options.seed + options.count))
    return {
        "dataset": str(options.dataset),
        "base_model": str(options.base_model),
        "vae": options.vae,
        "trigger": plan.trigger,
        "class": plan.class_word,
        "pictures": {
            "styles": plan.styles,
            "prompts": plan.prompts,
            "seeds": seeds,
            "size": list(options.size) if options.size else None,
            "sample_steps": options.sample_steps,
        },
        "clip_model": str(plan.clip_dir) if plan.clip_dir else None,
        "metric_keys": list(METRIC_KEYS),
        "paths_relative_to": "the folder holding this file",
        **method_header(plan),
    }


def _train(plan: SweepPlan, run: PlannedRun, tracker: SweepProgress, where: str):
    """The run's finished job: reused, resumed from its last checkpoint, or trained; and the seconds it took."""
    assert run.train is not None  # only runs that train come here
    if run.method == SINGLE_PHOTO_LORA:
        make_single_photo_dataset(plan, run)
    variant = run.settings.get("trigger")
    if variant and variant != plan.trigger:
        trigger_variant(plan.options.dataset, Path(run.train.dataset_dir), plan.trigger, variant)
    seen = {"step": None}

    def on_event(event: dict) -> None:
        if event.get("type") != "step" or not isinstance(event.get("step"), int):
            return
        step, total = event["step"], event.get("total") or run.steps_estimate
        if seen["step"] is None:
            tracker.skip(step - 1, f"{where}: resuming at step {step}") if step > 1 else None
            seen["step"] = step - 1
        loss = event.get("loss")
        tracker.advance(
            step - seen["step"],
            f"{where}: training step {step}/{total}" + (f", loss {loss:.4f}" if isinstance(loss, float) else ""),
            force=step == total,
        )
        seen["step"] = step

    def follow(training: TrainingRun) -> dict:
        tracker.note(f"{where}: training {json.dumps(run.settings)} in {run.job_dir}")
        try:
            return training.wait(on_event)
        except KeyboardInterrupt:
            training.stop()  # the worker saves a checkpoint: the next sweep resumes from it
            raise

    started = time.monotonic()
    trained = job_reuse.train_or_reuse(run.train, follow)
    seconds = round(time.monotonic() - started, 2)
    if trained.reused:
        tracker.skip(run.steps_estimate, f"{where}: reused the finished job {run.job_dir}")
    else:
        tracker.skip(max(0, run.steps_estimate - (seen["step"] or 0)), f"{where}: trained")
    return trained, seconds


def _trained_entry(plan: SweepPlan, run: PlannedRun, trained: job_reuse.TrainedLora, seconds) -> dict:
    recorded = trained.record.get("settings")
    recorded = recorded if isinstance(recorded, dict) else {}
    settings = {key: recorded.get(key) for key in ("lr", "rank", "alpha", "steps")}
    settings.update(run.settings)
    settings["trigger"] = run.settings.get("trigger") or plan.trigger
    out = plan.options.out
    return {
        "settings": settings,
        "state": "trained",
        "lora": relative(trained.lora, out),
        "job": relative(trained.job_dir, out),
        "pictures": None,
        "evaluation": None,
        "metrics": None,
        "final_loss": final_loss(trained.job_dir),
        "train_seconds": seconds,
        "reused": trained.reused,
        "loss_curve": relative(trained.loss_curve, out),
    }


def _untrained_entry(run: PlannedRun) -> dict:
    return {
        "settings": run.settings,
        "state": "pending",
        "lora": None,
        "job": None,
        "pictures": None,
        "evaluation": None,
        "metrics": None,
        "final_loss": None,
        "train_seconds": None,
    }


def _failed(run: PlannedRun, out: Path, exc: HeadshotError) -> dict:
    return {
        "settings": run.settings,
        "state": "failed",
        "lora": None,
        "job": relative(run.train_dir, out),
        "metrics": None,
        "final_loss": final_loss(run.train_dir),
        "train_seconds": None,
        "error": str(exc),
        "error_code": exc.code,
    }


def _event_seconds(job_dir: Path) -> float | None:
    """Training time of a job finished before this sweep record existed: its first to its last event."""
    try:
        lines = (job_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
        times = [json.loads(line).get("time") for line in (lines[0], lines[-1])]
        return round(float(times[1]) - float(times[0]), 2)
    except (OSError, ValueError, IndexError, TypeError, AttributeError):
        return None


def _pictures_and_metrics(
    plan: SweepPlan,
    models: SweepModels,
    folder: Path,
    lora: Path | None,
    trigger: str,
    tracker: SweepProgress,
    where: str,
    *,
    identity: bool = False,
) -> tuple[dict, Path]:
    """The batch's metrics: read back when `folder` holds its evaluation, else drawn in a staging folder,
    measured, and moved into place whole (a cut-short batch is drawn again, never half reused)."""
    from ..evaluate.evaluation import evaluate_pictures, write_evaluation
    from .pictures import draw_pictures

    picture_units = max(1.0, (plan.options.sample_steps or 20) / 2)
    units = plan.pictures_per_run * picture_units
    done = read_json(folder / EVALUATION)
    if done is not None and isinstance(done.get("summary"), dict):
        tracker.skip(units, f"{where}: reused the measured pictures in {folder}")
        return metrics_of(done["summary"]), folder / EVALUATION
    if folder.exists():
        raise HeadshotError(
            f"{folder} exists without {EVALUATION}; it is not a finished batch of this sweep: move it away and "
            "run the sweep again",
            "out_not_empty",
        )
    staging = folder.parent / f".partial-{folder.name}"
    if staging.exists():
        shutil.rmtree(staging)  # our own batch, cut short
    staging.mkdir(parents=True)
    options = plan.options
    pictures = draw_pictures(
        models.sampler,
        models.dlib,
        staging,
        styles=plan.styles,
        prompts=plan.prompts,
        lora=lora,
        trigger=trigger,
        class_word=plan.class_word,
        count=options.count,
        seed=options.seed,
        size=options.size,
        steps=options.sample_steps,
        style_dirs=options.style_dirs,
        identity=models.identity if identity else None,
        on_picture=lambda message: tracker.advance(picture_units, f"{where}: drawing {message}", force=True),
    )
    tracker.note(f"{where}: measuring {len(pictures)} pictures")
    evaluation = evaluate_pictures(pictures, models.reference, models.dlib, models.arcface, models.clip)
    evaluation.warnings[:0] = models.warnings
    write_evaluation(staging, evaluation)
    staging.replace(folder)
    return metrics_of(evaluation.summary()), folder / EVALUATION
