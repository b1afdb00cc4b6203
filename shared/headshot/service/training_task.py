"""A training job in a worker: prepare (screening, with each rejected photo's reason) → train (the core's
worker process, resumed from its last checkpoint when an earlier try was cut short) → identity (the
reference the trainer saves beside the LoRA, for ranking pictures)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from pathlib import Path

from ..errors import HeadshotError
from .config import MODELS, UPLOADS, ServiceConfig
from .db import Job, Model, Store, loads
from .runner import Heartbeat, JobCancelled

log = logging.getLogger("headshot.service")
TRAIN_STEP = "train_seconds_per_step"
TRAIN_OVERHEAD = "train_overhead_s"
DEFAULT_OVERHEAD_S = 60.0


def estimated_time(store: Store, config: ServiceConfig, steps: int) -> int:
    """Seconds for a training job of `steps`, from this server's measured speed (a default before any)."""
    per_step = store.measured(TRAIN_STEP) or config.default_seconds_per_step
    overhead = store.measured(TRAIN_OVERHEAD) or DEFAULT_OVERHEAD_S
    return int(math.ceil(overhead + steps * per_step))


def planned_steps_for(options: dict, photos: int) -> int:
    from ..train.presets import PRESETS, planned_steps

    return options.get("steps") or planned_steps(PRESETS[options.get("preset") or "balanced"], photos)


def prepare_resolution(options: dict) -> int:
    """Prepare crops at the training size rounded up to 64, within what prepare accepts (256–2048)."""
    size = options.get("resolution") or 512
    return min(2048, max(256, -(-size // 64) * 64))


def train_model(config: ServiceConfig, store: Store, job: Job, beat: Heartbeat) -> dict:
    started = time.monotonic()
    model = store.model(job.model_id)
    if model is None:
        raise JobCancelled()  # erased before the job ran
    options = loads(job.request).get("training") or {}
    model_dir = config.folder(MODELS, model.id)
    kept, rejected = _prepare(config, store, job, model, options, model_dir / "dataset")
    beat.check()
    record, settings = _train(config, store, job, model, options, model_dir, beat)
    lora = Path(settings.out_dir) / Path(str(record.get("lora"))).name
    if store.model(model.id) is None:  # erased while training: take away what the trainer wrote since
        shutil.rmtree(model_dir, ignore_errors=True)
        raise JobCancelled()
    with store.session() as s:
        row = s.get(Model, model.id)
        if row is not None:
            row.status, row.lora = "ready", str(lora.relative_to(config.data_dir))
    steps = int(record.get("steps_done") or settings.steps or 0)
    per_step = store.measured(TRAIN_STEP) or config.default_seconds_per_step
    store.measure(TRAIN_OVERHEAD, max(0.0, time.monotonic() - started - steps * per_step))
    return {
        "kept_photos": kept,
        "rejected_photos": rejected,
        "chosen_step": record.get("chosen_step"),
        "identity": bool(record.get("identity")),
    }


def _prepare(config, store: Store, job: Job, model, options: dict, dataset_dir: Path) -> tuple[int, list[dict]]:
    """The screened dataset (made once; a resumed job reuses it) and the photos it left out, with reasons."""
    from ..dataset.prepare import REPORT_NAME, prepare_dataset
    from ..dataset.prepare_settings import PrepareSettings

    report_path = dataset_dir / REPORT_NAME
    if not report_path.is_file():
        store.update_job(job.id, step=0, total=0)
        settings = PrepareSettings(
            trigger=model.trigger,
            class_word=model.class_type,
            resolution=prepare_resolution(options),
            face_backend=config.face_backend,
            face_model_dirs=list(config.face_model_dirs),
        )
        try:
            prepare_dataset(config.folder(UPLOADS, model.id), dataset_dir, settings)
        except HeadshotError as exc:
            if exc.code != "no_photos_kept" or not report_path.is_file():
                raise
    report = json.loads(report_path.read_text(encoding="utf-8"))
    photos = report.get("photos") or []
    kept = sum(p.get("status") == "kept" for p in photos)
    rejected = [
        {"photo": p.get("source"), "reason": p.get("reason"), "message": p.get("message") or ""}
        for p in photos
        if p.get("status") != "kept"
    ]
    store.update_job(job.id, result=json.dumps({"kept_photos": kept, "rejected_photos": rejected}))
    if kept < config.limits.min_photos:
        reasons = "; ".join(r["message"] for r in rejected[:5])
        raise HeadshotError(
            f"only {kept} of {len(photos)} photos could be used and training needs {config.limits.min_photos}: "
            f"{reasons} (every reason is in rejected_photos); send clearer photos of one face",
            "too_few_photos_kept",
        )
    return kept, rejected


def _train(config, store: Store, job: Job, model, options: dict, model_dir: Path, beat: Heartbeat):
    from ..train.job import JobFolder
    from ..train.launch import start_training
    from ..train.settings import TrainSettings
    from .generation_task import release_resident_models

    chosen = {key: options[key] for key in ("steps", "resolution", "rank", "preset") if options.get(key) is not None}
    settings = TrainSettings(
        dataset_dir=str(model_dir / "dataset"),
        base_model=model.base_model,
        vae=config.vae,
        out_dir=str(model_dir / "training"),
        output_name=model.instance_name,
        device=config.device,
        face_backend=config.face_backend,
        face_model_dirs=list(config.face_model_dirs),
        tokenizer_dirs=list(config.tokenizer_dirs),
        **({"validation_images": config.validation_images} if config.validation_images is not None else {}),
        **({"checkpoint_every": config.checkpoint_every} if config.checkpoint_every else {}),
        **chosen,
    )
    folder = JobFolder(settings.out_dir)
    record = folder.status() if folder.exists() else {}
    if record.get("state") == "done":  # finished before the worker died: only the bookkeeping was lost
        return record, settings
    saved = folder.checkpoints() if folder.exists() else []
    if saved:  # an earlier try was cut short (a killed worker, a crash): say where this one starts
        log.info("job %s resumes training from step %d (checkpoint %s)", job.id, saved[-1][0], saved[-1][1].name)
    release_resident_models()  # a generation job's sampler would share the training's card otherwise
    run = start_training(settings, resume=folder.exists())  # resume: from the last checkpoint
    stop_watch = threading.Event()

    def watch_cancel() -> None:
        while not stop_watch.wait(0.5):
            if beat.cancelled.is_set():
                run.cancel()  # the worker saves a checkpoint, then stops
                return

    threading.Thread(target=watch_cancel, name=f"cancel-{job.id}", daemon=True).start()
    last_step: dict = {}

    def on_event(event: dict) -> None:
        if event.get("type") == "step":
            last_step.update(event)
            store.update_job(job.id, step=event["step"], total=event["total"], eta_s=event.get("eta_s"))
        elif event.get("type") == "warning":  # the job stands, but a crash at the worker's exit is the operator's
            log.warning("job %s: %s", job.id, event.get("message"))

    try:
        record = run.wait(on_event)
    finally:
        stop_watch.set()
    if last_step.get("it_per_s"):
        store.measure(TRAIN_STEP, 1.0 / float(last_step["it_per_s"]))
    state = record.get("state")
    if state == "done":
        return record, settings
    if state == "cancelled" and beat.cancelled.is_set():
        raise JobCancelled()
    if record.get("error_code") and record.get("error_code") != "interrupted":
        raise HeadshotError(str(record.get("error")), str(record.get("error_code")))
    raise RuntimeError(record.get("error") or f"training stopped ({state}); it resumes from its last checkpoint")
