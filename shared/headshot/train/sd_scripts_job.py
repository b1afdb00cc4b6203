"""A training job run by a person's own kohya sd-scripts, recorded in the same job folder format.

sd-scripts works in <job>/sd-scripts/: its config, dataset TOML, log, step checkpoints and (with
`save_state`) the state folders a resumed job goes on from. The finished LoRA is copied to
<job>/<name>.safetensors with its A1111 sidecar and identity reference, each written atomically and
only over a file this project wrote before.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from ..dataset import kohya
from ..errors import HeadshotError
from ..faces import load_face_analyzer
from ..families import detect_checkpoint, diffusers_folder_family, get_family
from ..families.checkpoint_file import read_checkpoint
from ..outputs import OutputManifest, atomic_save
from . import sd_scripts
from .dataset import load_training_set
from .input_cache import InputCache, images_digest
from .job import Cancelled, JobFolder
from .lora_files import write_a1111_sidecar
from .loss_curve import draw_loss_curve, trim_loss_log
from .selection import cached_identity_reference, write_identity_reference
from .settings import TrainSettings

OPTIMIZER_NAMES = {"adamw": "AdamW", "adamw8bit": "AdamW8bit", "prodigy": "Prodigy"}
PREFERRED_WEIGHT = 0.8


def _base_model_family(base_model: str, vae: str | None = None) -> str:
    """The family of a checkpoint file or diffusers folder, read from the weights or configs."""
    path = Path(base_model)
    if path.is_file():  # .safetensors lazily, .ckpt with weights_only
        state_dict, metadata = read_checkpoint(path)
        return detect_checkpoint(state_dict, metadata=metadata, source=path.name, needs_vae=not vae)[0].name
    family = diffusers_folder_family(path) if path.is_dir() else None
    if family is None:
        raise HeadshotError(
            f"--base-model {base_model}: no local checkpoint or diffusers folder of a known family "
            "(sd-scripts is given a local file or folder); pass one.",
            "base_model_not_found",
        )
    return family.name


def _loadable(path: Path) -> bool:
    """A whole safetensors file (its header parses), e.g. sd-scripts' final LoRA before a kill cut the copy."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            f.keys()
        return True
    except Exception:
        return False


def run_sd_scripts_job(settings: TrainSettings, job: JobFolder) -> dict:
    if not settings.sd_scripts_repo:
        raise HeadshotError("--backend sd-scripts needs --sd-scripts PATH (a kohya sd-scripts checkout)", "bad_option")
    setup = sd_scripts.locate(settings.sd_scripts_repo, settings.sd_scripts_python)
    training_set = load_training_set(settings.dataset_dir)
    family = _base_model_family(settings.base_model, settings.vae)
    images = training_set.images
    s = settings.resolved(len(images), images[0].repeats, training_set.resolution, on_gpu=False)
    # resolved() filled these from the preset (and the dataset's resolution)
    assert s.steps is not None and s.resolution is not None and s.warmup_steps is not None
    assert s.rank is not None and s.alpha is not None and s.lr is not None
    assert s.optimizer is not None and s.scheduler is not None

    # the files we hand out: refused at once if someone else's file has the name, before any training
    out_dir = Path(s.out_dir)
    manifest = OutputManifest(out_dir)
    out = manifest.claim(out_dir / f"{s.output_name}.safetensors")
    manifest.claim(out.with_suffix(".json"))  # the A1111 sidecar
    identity_path = manifest.claim(out.with_suffix(".identity.json"))
    manifest.save()

    job.update(state="running", settings=s.to_dict(), total_steps=s.steps, backend="sd-scripts")
    work = job.path / "sd-scripts"
    work.mkdir(parents=True, exist_ok=True)
    # a fresh dataset TOML: the one prepare wrote holds absolute paths that break if the folder moved.
    # All steps in one sd-scripts epoch, so that a resume counts on from the right step.
    subset = images[0].path.parent
    in_subset = sum(1 for im in images if im.path.parent == subset)
    repeats = sd_scripts.one_epoch_repeats(in_subset, images[0].repeats, s.steps)
    dataset_toml = work / "dataset.toml"
    parsed = kohya.parse_subset_folder(subset.name)
    assert parsed is not None  # load_training_set takes images only from folders that parse as subsets
    kohya.write_dataset_toml(dataset_toml, subset, parsed[1], repeats, s.resolution)
    config = sd_scripts.training_config(
        family=family,
        base_model=Path(s.base_model),
        dataset_toml=dataset_toml,
        out_dir=work,
        output_name=s.output_name,
        steps=s.steps,
        rank=s.rank,
        alpha=s.alpha,
        lr=s.lr,
        text_encoder_lr=s.text_encoder_lr,
        optimizer=OPTIMIZER_NAMES[s.optimizer],
        scheduler=s.scheduler,
        warmup_steps=s.warmup_steps,
        seed=s.seed,
        mixed_precision="no" if s.mixed_precision == "auto" else s.mixed_precision,
        gradient_checkpointing=bool(s.gradient_checkpointing),
        cache_latents=True,
        min_snr_gamma=s.min_snr_gamma,
        noise_offset=s.noise_offset or None,
        save_every_n_steps=s.checkpoint_every,
        resolution=s.resolution,
        tokenizer_cache_dir=Path(s.tokenizer_dirs[0]) if s.tokenizer_dirs else None,
        device=None if s.device == "auto" else s.device,
        save_state=True,
        extra={
            **({"no_half_vae": True} if s.no_half_vae else {}),
            **({"vae": str(Path(s.vae).expanduser().resolve())} if s.vae else {}),
        }
        or None,
    )

    produced = work / f"{s.output_name}.safetensors"
    if sd_scripts.finished_state(work, s.output_name) and _loadable(produced):
        # sd-scripts had finished before the job stopped (e.g. while copying): nothing left to train
        job.emit("resumed", step=s.steps, checkpoint=str(produced))
    else:
        produced = _train(setup, family, config, work, job, s)

    draw_loss_curve(job.path / "loss.csv", job.path / "loss.png")
    atomic_save(out, lambda tmp: shutil.copyfile(produced, tmp))
    trigger = " ".join(t for t in (training_set.trigger, training_set.class_word) if t)
    write_a1111_sidecar(
        out, activation_text=trigger, preferred_weight=PREFERRED_WEIGHT, sd_version=get_family(family).a1111_sd_version
    )
    analyzer = load_face_analyzer(s.face_backend, s.face_model_dirs)
    # kept with the builtin engine's inputs: a repeated or swept run on these photos finds no face again
    cache = InputCache(s.cache_dir or Path(s.out_dir) / "input-cache")
    embedding, count = cached_identity_reference(
        cache, training_set.images, images_digest(training_set.images), analyzer
    )
    identity = write_identity_reference(identity_path, analyzer, embedding, count)
    choice = {
        "step": s.steps,
        "reason": "sd-scripts backend: its final LoRA (likeness validation runs in the builtin engine)",
    }
    return {"lora": str(out), "chosen_step": s.steps, "choice": choice, "identity": identity}


def _train(setup, family: str, config: dict, work: Path, job: JobFolder, s: TrainSettings) -> Path:
    """Run sd-scripts, from its newest saved state when there is one; events and loss.csv in the job folder."""
    assert s.steps is not None  # resolved() filled it from the preset
    state = sd_scripts.latest_state(work, s.output_name, s.steps)
    start = state[0] if state else 0
    loss_csv = job.path / "loss.csv"
    trim_loss_log(loss_csv, start)  # the steps after the state are trained again
    if state:
        job.emit("resumed", step=start, checkpoint=str(state[1]))
    cancel = threading.Event()
    stop_watching = threading.Event()

    def watch_cancel():
        while not stop_watching.wait(0.5):
            if job.cancel_requested():
                cancel.set()
                return

    watcher = threading.Thread(target=watch_cancel, daemon=True)
    watcher.start()
    loss_log = open(loss_csv, "a", encoding="utf-8")
    if loss_log.tell() == 0:
        loss_log.write("step,loss,lr\n")
    last = {"step": start, "checkpoint": start}

    def on_event(event: dict) -> None:
        kind = event.get("type")
        if kind == "step" and event.get("loss") is not None and event["step"] > last["step"]:
            last["step"] = event["step"]
            loss_log.write(f"{event['step']},{event['loss']},{s.lr}\n")
            loss_log.flush()
            job.emit(
                "step",
                step=event["step"],
                total=event.get("total", s.steps),
                loss=event["loss"],
                lr=s.lr,
                it_per_s=event.get("it_per_s") or 0.0,
                eta_s=event.get("eta_s") or 0.0,
            )
            job.update(steps_done=event["step"])
        elif kind == "checkpoint":
            if event.get("step"):
                last["checkpoint"] = event["step"]
                loss_log.flush()
                draw_loss_curve(loss_csv, job.path / "loss.png")
            job.emit("checkpoint", step=event.get("step"), path=event.get("path"))
        elif kind == "error":
            job.emit("status", message=f"sd-scripts: {event.get('message')}")

    try:
        return sd_scripts.run(setup, family, config, work, on_event, cancel=cancel, resume=state[1] if state else None)
    except HeadshotError as exc:
        if exc.code == "cancelled":
            raise Cancelled(last["checkpoint"]) from None  # sd-scripts saves nothing when stopped
        raise
    finally:
        stop_watching.set()
        loss_log.close()
