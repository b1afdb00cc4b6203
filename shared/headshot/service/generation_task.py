"""A generation job in a worker: the photoshoot (generate, then finish: detailer, restoration when a model is
configured, ranking by likeness, faceless pictures set aside) with the person's LoRA over a base model that
stays loaded in this worker process between jobs; only the LoRA is swapped."""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import HeadshotError
from .config import IMAGES, ServiceConfig
from .db import Job, Picture, Store, loads, new_id
from .runner import Heartbeat, JobCancelled

_warm: dict[str, object] = {}  # per worker process: the sampler, face analyzer and restorer, loaded once
_warm_lock = threading.Lock()


def _resident(key: str, load):
    with _warm_lock:
        if key not in _warm:
            _warm[key] = load()
        return _warm[key]


def warm_sampler(config: ServiceConfig):
    from ..sampling.diffusers_sampler import DiffusersSampler

    return _resident(
        f"sampler:{config.base_model}:{config.device}",
        lambda: DiffusersSampler(config.base_model, tokenizer_dirs=config.tokenizer_dirs, device=config.device),
    )


def _analyzer(config: ServiceConfig):
    from ..faces import load_face_analyzer

    return _resident(
        f"faces:{config.face_backend}", lambda: load_face_analyzer(config.face_backend, config.face_model_dirs)
    )


def _restorer(config: ServiceConfig):
    if not config.restore_model:
        return None
    from ..finish.restore import load_restore_model

    return _resident(f"restore:{config.restore_model}", lambda: load_restore_model(Path(config.restore_model)))


def generate_pictures(config: ServiceConfig, store: Store, job: Job, beat: Heartbeat) -> dict:
    from ..finish.detail_and_restore import Finishing
    from ..finish.ranking import identity_beside
    from ..photoshoot import GenerateSettings, generate

    model = store.model(job.model_id)
    if model is None:
        raise JobCancelled()  # the model was erased
    if model.status != "ready" or not model.lora:
        raise HeadshotError(f"model {model.id} is {model.status}, not ready: wait for its training", "model_not_ready")
    request = loads(job.request)
    lora = config.data_dir / model.lora
    sampler = warm_sampler(config)
    if sampler.loaded_loras != [str(lora)]:  # another person's LoRA: unhook it, so only one stays in memory
        sampler.unload_loras()
    analyzer = _analyzer(config)
    finishing = Finishing(
        analyzer=analyzer,
        identity=identity_beside(lora, analyzer),
        sampler=sampler,
        restorer=_restorer(config),
    )
    # each try draws into its own folder: a try cut short never mixes its pictures with the next one's
    out = config.folder(IMAGES, job.id) / f"try-{job.attempts}"
    width, height = request.get("width"), request.get("height")
    settings = GenerateSettings(
        style=request["style_template"],
        count=request["num_images"],
        out_dir=out,
        loras=[str(lora)],
        seed=request.get("seed") or 0,
        size=(width, height) if width and height else None,
        steps=request.get("steps"),
        detailer=config.detailer,
        style_dirs=[Path(d) for d in config.style_dirs],
    )

    def progress(done: int, total: int, message: str) -> None:
        beat.check()
        store.update_job(job.id, step=done, total=total)

    results = generate(settings, sampler, finishing, progress=progress)
    beat.check()
    if store.model(model.id) is None:  # erased while drawing: nothing of the person stays
        import shutil

        shutil.rmtree(config.folder(IMAGES, job.id), ignore_errors=True)
        raise JobCancelled()
    pictures = [entry for entry in results if not entry.get("skipped") and entry.get("image")]
    with store.session() as s:
        for position, entry in enumerate(pictures):  # results come best first, faceless ones last
            s.add(
                Picture(
                    id=new_id("img"),
                    job_id=job.id,
                    user_id=job.user_id,
                    model_id=model.id,
                    path=str((out / entry["image"]).relative_to(config.data_dir)),
                    seed=int(entry["seed"]),
                    identity_score=entry.get("identity_score"),
                    faceless=entry.get("faceless"),
                    position=position,
                )
            )
    store.update_job(job.id, step=settings.count, total=settings.count)
    return {"pictures": len(pictures), "skipped": len(results) - len(pictures)}
