"""A generation job in a worker: the photoshoot (generate, then finish: detailer, restoration when a model is
configured, ranking by likeness, faceless pictures set aside) with the person's LoRA over a base model that
stays loaded in this worker process between jobs; only the LoRA is swapped. A one-photo job (reference_image
instead of model_id) draws with no LoRA: the photo's face through the identity adapter (IP-Adapter FaceID), as
`headshot generate --reference` does, and the pictures are ranked against that photo."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from ..errors import HeadshotError
from .config import IMAGES, UPLOADS, ServiceConfig
from .db import Job, Picture, Store, loads, new_id
from .runner import Heartbeat, JobCancelled

#: the file name (plus the photo's extension) a one-photo job's reference_image waits under, in uploads/<job id>/
REFERENCE_NAME = "reference"
_warm: dict[str, object] = {}  # per worker process: the sampler, face analyzer and restorer, loaded once
_warm_lock = threading.Lock()


def _resident(key: str, load):
    with _warm_lock:
        if key not in _warm:
            _warm[key] = load()
        return _warm[key]


def release_resident_models() -> None:
    """Drop what this worker keeps loaded for generation (the sampler, face analyzer and restorer) before a training
    job's worker process starts on the same card: the next generation job loads them again, seconds against a
    training's minutes."""
    with _warm_lock:
        held = bool(_warm)
        _warm.clear()
    if held:  # torch is loaded only where something was
        import torch

        from ..devices import free_device_memory, return_freed_memory

        free_device_memory(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        return_freed_memory()


def warm_sampler(config: ServiceConfig):
    from ..sampling.diffusers_sampler import DiffusersSampler

    return _resident(
        f"sampler:{config.base_model}:{config.vae}:{config.device}",
        lambda: DiffusersSampler(
            config.base_model, tokenizer_dirs=config.tokenizer_dirs, device=config.device, vae=config.vae
        ),
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


def one_photo_adapter(config: ServiceConfig) -> Path:
    """The FaceID file one-photo jobs draw with: `adapter` (a path or a name) in `adapter_dirs`, ComfyUI's
    models/ipadapter or A1111's models/ControlNet ($COMFYUI_PATH / $A1111_PATH), or the base model family's
    usual file; missing: a HeadshotError naming the file and where to put it."""
    from ..families.checkpoint_detection import base_model_family
    from ..generate.adapter_files import adapter_dirs, find_adapter

    family = base_model_family(config.base_model) if config.base_model else None
    return find_adapter(config.adapter, adapter_dirs(config.adapter_dirs), family.name if family else "")


def _with_model(config: ServiceConfig, store: Store, job: Job) -> tuple[list[str], object, object]:
    """(LoRAs, identity adapter, ranking identity) of a job drawn with the person's trained model."""
    from ..finish.ranking import identity_beside

    model = store.model(job.model_id)
    if model is None:
        raise JobCancelled()  # the model was erased
    if model.status != "ready" or not model.lora:
        raise HeadshotError(f"model {model.id} is {model.status}, not ready: wait for its training", "model_not_ready")
    lora = config.data_dir / model.lora
    sampler = warm_sampler(config)
    if sampler.loaded_loras != [str(lora)]:  # another person's LoRA: unhook it, so only one stays in memory
        sampler.unload_loras()
    return [str(lora)], None, identity_beside(lora, _analyzer(config))


def _with_reference(config: ServiceConfig, photo: Path) -> tuple[list[str], object, object]:
    """(no LoRAs, FaceID identity, ranking identity) of a one-photo job: the photo is screened as prepare
    screens one, so a photo with no usable face, or several, fails the job with prepare's reason."""
    from ..finish.ranking import identity_from_photos
    from ..sampling.identity_reference import identity_from_photo

    adapter = one_photo_adapter(config)  # again: the server may have changed since the job was accepted
    analyzer = _analyzer(config)
    identity = identity_from_photo(
        photo, analyzer, adapter, weight=config.adapter_weight, image_encoder=config.image_encoder
    )
    sampler = warm_sampler(config)
    if sampler.loaded_loras:  # the last job's LoRA must not draw over this person's face
        sampler.unload_loras()
    return [], identity, identity_from_photos(photo, analyzer)


def generate_pictures(config: ServiceConfig, store: Store, job: Job, beat: Heartbeat) -> dict:
    request = loads(job.request)
    if not request.get("reference"):
        return _draw(config, store, job, beat, request, _with_model(config, store, job))
    uploads = config.folder(UPLOADS, job.id)
    try:
        setup = _with_reference(config, uploads / Path(request["reference"]).name)
        result = _draw(config, store, job, beat, request, setup)
    except (HeadshotError, JobCancelled):  # the job ends here: the photo is not kept (a crash keeps it to retry)
        shutil.rmtree(uploads, ignore_errors=True)
        raise
    shutil.rmtree(uploads, ignore_errors=True)  # drawn: the person's photo is not kept
    return result


def _draw(config: ServiceConfig, store: Store, job: Job, beat: Heartbeat, request: dict, setup: tuple) -> dict:
    from ..finish.detail_and_restore import Finishing
    from ..photoshoot import GenerateSettings, generate

    loras, identity, ranking = setup
    sampler = warm_sampler(config)
    finishing = Finishing(analyzer=_analyzer(config), identity=ranking, sampler=sampler, restorer=_restorer(config))
    # each try draws into its own folder: a try cut short never mixes its pictures with the next one's
    out = config.folder(IMAGES, job.id) / f"try-{job.attempts}"
    width, height = request.get("width"), request.get("height")
    settings = GenerateSettings(
        style=request["style_template"],
        count=request["num_images"],
        out_dir=out,
        loras=loras,
        seed=request.get("seed") or 0,
        size=(width, height) if width and height else None,
        steps=request.get("steps"),
        detailer=config.detailer,
        style_dirs=[Path(d) for d in config.style_dirs],
        identity=identity,
    )

    def progress(done: int, total: int, message: str) -> None:
        beat.check()
        store.update_job(job.id, step=done, total=total)

    results = generate(settings, sampler, finishing, progress=progress)
    beat.check()
    if job.model_id and store.model(job.model_id) is None:  # erased while drawing: nothing of the person stays
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
                    model_id=job.model_id,
                    path=str((out / entry["image"]).relative_to(config.data_dir)),
                    seed=int(entry["seed"]),
                    identity_score=entry.get("identity_score"),
                    faceless=entry.get("faceless"),
                    position=position,
                )
            )
    store.update_job(job.id, step=settings.count, total=settings.count)
    return {"pictures": len(pictures), "skipped": len(results) - len(pictures)}
