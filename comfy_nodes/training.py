"""Train Identity LoRA: the core's training worker, driven from a node.

The core (headshot.train.job_reuse) names the job folder after what decides the result, reuses a
finished job and resumes a stopped one; this node turns widgets into settings, shows progress,
passes ComfyUI's Cancel on, and copies the LoRA into models/loras/headshot/ so LoraLoader lists it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from headshot.errors import HeadshotError
from headshot.outputs import safe_name

from . import host
from .common import CATEGORY, face_backend_input, release_face_analyzers
from .images import fit_batch, note_image, pil_to_image_batch
from .paths import RULE, allowed_path, user_path

PRESETS = ["fast", "balanced", "quality"]
BAKED_VAE = "Baked VAE"  # vae_name's first choice: the checkpoint's own VAE
LORA_SUBFOLDER = "headshot"
POLL = 0.25

log = logging.getLogger(__name__)


def choices(
    output_name,
    preset,
    steps,
    rank,
    learning_rate,
    resolution,
    seed,
    validation_images,
    face_backend,
    sd_scripts_path="",
) -> dict:
    """The person's choices as TrainSettings fields (0 / -1 / empty mean: from the preset)."""
    safe_name(output_name, "Train Identity LoRA output_name")  # it names the LoRA file and the job folder
    sd_scripts = (
        str(user_path(sd_scripts_path, "Train Identity LoRA sd_scripts_path")) if sd_scripts_path.strip() else None
    )  # code that runs: never from a folder a shared workflow picked
    return {
        "output_name": output_name,
        "preset": preset,
        "steps": steps or None,
        "rank": rank or None,
        "lr": learning_rate or None,
        "resolution": resolution or None,
        "seed": seed,
        "validation_images": None if validation_images < 0 else validation_images,
        "face_backend": face_backend,
        "backend": "sd-scripts" if sd_scripts else "builtin",
        "sd_scripts_repo": sd_scripts,
    }


def job_dir_for(chosen: dict, dataset: Path, checkpoint: Path, vae: Path | None = None) -> Path:
    """The core's job folder for these choices, under ComfyUI's output folder (never a link out of it)."""
    from headshot.train.job_reuse import job_folder

    return allowed_path(
        job_folder(host.jobs_root(), chosen, dataset, checkpoint, vae), "Train Identity LoRA output_name"
    )


def vae_file(vae_name: str | None) -> Path | None:
    """The models/vae file chosen in place of the checkpoint's own VAE (None: the checkpoint's)."""
    return None if not vae_name or vae_name == BAKED_VAE else host.full_path("vae", vae_name)


def install_lora(lora: Path, output_name: str) -> str:
    """Copy the LoRA (and its sidecars) into loras/headshot/; its LoraLoader name."""
    from headshot.train.job_reuse import install_copy

    dirs = host.folder_dirs("loras")
    if not dirs:
        raise FileNotFoundError("ComfyUI has no 'loras' folder registered; the LoRA stays at " + str(lora))
    target = install_copy(lora, dirs[0] / LORA_SUBFOLDER, output_name)
    host.forget_file_list("loras")
    return os.path.join(LORA_SUBFOLDER, target.name)


def follow(run) -> dict:
    """Wait for the worker: its stages to ComfyUI's console, steps to the progress bar, Cancel to the job.

    ComfyUI's progress hook itself raises its interrupt exception, so any exception here stops
    the worker before it goes on up: no training is left running behind ComfyUI's back.
    """
    bar = None
    offset = 0
    try:
        while True:
            events, offset = run.job.events(offset)
            for event in events:
                if event.get("type") == "status":  # loading, caching: a minute or more on a CPU before step 1
                    log.info("[Headshot Studio] %s", event.get("message"))
                if event.get("type") == "step" and event.get("total"):
                    bar = bar or host.Progress(event["total"])
                    bar(event["step"], event["total"])
            if host.interrupted():
                host.raise_if_interrupted()
            if not run.running:
                break
            time.sleep(POLL)
    except BaseException:
        if run.running:
            run.stop()  # it saves a checkpoint first: the next run resumes from it
        raise
    return run.wait(_log_warning)


def free_host_memory() -> None:
    """Before a training worker starts: ComfyUI's models off the GPU and the pack's face analyzers dropped."""
    release_face_analyzers()
    host.free_models()


def _log_warning(event: dict) -> None:
    """A worker's warning (a crash after it recorded its end) in ComfyUI's console; the summary has it too."""
    if event.get("type") == "warning":
        log.warning("[Headshot Studio] %s", event.get("message"))


class HeadshotTrainLora:
    DESCRIPTION = (
        "Trains a kohya-format identity LoRA from a prepared dataset in a separate worker process "
        "(ComfyUI's loaded models are freed first), then copies it into models/loras/headshot/. "
        "Cancel stops it after saving a checkpoint; running it again resumes. With nothing changed, "
        "the finished job is reused instead of training again."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dataset_path": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The prepared dataset folder: connect Prepare "
                        "Dataset's dataset_path, or type its path." + RULE,
                    },
                ),
                "ckpt_name": (
                    host.file_list("checkpoints"),
                    {
                        "tooltip": "Base model from models/checkpoints "
                        "(SD1.x, SD2.x or SDXL; told apart from the weights)."
                    },
                ),
                "output_name": (
                    "STRING",
                    {
                        "default": "headshot_lora",
                        "tooltip": "File name of the LoRA: it "
                        "appears in LoraLoader as headshot/<name>.safetensors (no '/', '\\' "
                        "or '..').",
                    },
                ),
                "preset": (
                    PRESETS,
                    {
                        "default": "balanced",
                        "tooltip": "Defaults for steps, rank, learning rate "
                        "and schedule; the fields below override them.",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "Training steps; 0: from the preset (photos x 200, clamped).",
                    },
                ),
                "rank": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip": "LoRA rank; 0: from the preset."}),
                "learning_rate": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 1e-5,
                        "round": False,
                        "tooltip": "Learning rate; 0: from the preset.",
                    },
                ),
                "resolution": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 2048,
                        "step": 8,
                        "tooltip": "Training resolution; 0: the dataset's crop size.",
                    },
                ),
                # not named "seed": ComfyUI's frontend would add a randomize-after-run control to it
                "training_seed": (
                    "INT",
                    {
                        "default": 42,
                        "min": 0,
                        "max": 2**31 - 1,
                        "tooltip": "Seed of the LoRA's initialisation, noise and validation images.",
                    },
                ),
                "validation_images": (
                    "INT",
                    {
                        "default": -1,
                        "min": -1,
                        "max": 16,
                        "tooltip": "Images rendered "
                        "per checkpoint to pick the most alike; -1: 4 on a GPU, 0 on the "
                        "CPU.",
                    },
                ),
                "face_backend": face_backend_input(),
            },
            "optional": {
                "sd_scripts_path": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "A kohya sd-scripts checkout to train "
                        "with instead of the builtin engine; empty: builtin." + RULE,
                    },
                ),
                "vae_name": (
                    [BAKED_VAE, *host.file_list("vae")],
                    {
                        "default": BAKED_VAE,
                        "tooltip": "The VAE that encodes the photos: the checkpoint's own (Baked VAE), or one from "
                        "models/vae, needed when the checkpoint was saved without a VAE.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("STRING", "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("lora_name", "loss_curve", "validation_samples", "summary")
    OUTPUT_TOOLTIPS = (
        "The LoRA's name as LoraLoader lists it (headshot/<output_name>.safetensors).",
        "Training loss over the steps.",
        "Validation images of the chosen checkpoint (a note when validation was off).",
        "What happened: job folder, steps, chosen checkpoint and why, trigger phrase.",
    )
    FUNCTION = "train"
    CATEGORY = f"{CATEGORY}/train"
    OUTPUT_NODE = True  # it writes a LoRA

    @classmethod
    def IS_CHANGED(cls, dataset_path=None, ckpt_name=None, vae_name=None, **settings):
        from headshot.train.job_reuse import checkpoint_identity, dataset_digest, fingerprint

        # a linked dataset_path arrives as None: then the upstream Prepare Dataset's state decides
        parts = [settings, ckpt_name]
        if dataset_path:
            try:  # only a folder the node may read is hashed (never a home folder); train() says why not
                parts.append(dataset_digest(user_path(dataset_path, "dataset_path")))
            except HeadshotError:
                pass
        try:
            parts.append(checkpoint_identity(host.full_path("checkpoints", ckpt_name)))
        except (FileNotFoundError, TypeError):
            pass
        try:
            vae = vae_file(vae_name)
            if vae is not None:
                parts.append(checkpoint_identity(vae))
        except (FileNotFoundError, TypeError):
            pass
        return fingerprint(*parts)

    def train(
        self,
        dataset_path: str,
        ckpt_name: str,
        output_name: str,
        preset: str,
        steps: int,
        rank: int,
        learning_rate: float,
        resolution: int,
        training_seed: int,
        validation_images: int,
        face_backend: str,
        sd_scripts_path: str = "",
        vae_name: str = BAKED_VAE,
    ):
        from PIL import Image

        from headshot.train.job_reuse import train_or_reuse
        from headshot.train.settings import TrainSettings

        dataset = user_path(dataset_path, "Train Identity LoRA dataset_path")
        checkpoint = host.full_path("checkpoints", ckpt_name)
        vae = vae_file(vae_name)
        chosen = choices(
            output_name.strip(),
            preset,
            steps,
            rank,
            learning_rate,
            resolution,
            training_seed,
            validation_images,
            face_backend,
            sd_scripts_path,
        )
        device = host.torch_device()  # ComfyUI's own device: --cpu trains on the CPU too
        if device.split(":")[0] not in ("cuda", "cpu", "mps"):
            device = "auto"  # one a new process cannot name (DirectML): the worker picks its own
        settings = TrainSettings(
            dataset_dir=str(dataset),
            base_model=str(checkpoint),
            out_dir=str(job_dir_for(chosen, dataset, checkpoint, vae)),
            vae=None if vae is None else str(vae),
            device=device,
            face_model_dirs=[str(d) for d in host.folder_dirs("insightface")],
            tokenizer_dirs=[str(d) for d in host.comfy_tokenizer_dirs()],
            **chosen,
        )
        trained = train_or_reuse(settings, follow, free_host_models=free_host_memory)
        lora_name = install_lora(trained.lora, settings.output_name)

        if trained.loss_curve is not None:
            with Image.open(trained.loss_curve) as img:
                loss = img.convert("RGB")
        else:
            loss = note_image("no loss curve was drawn for this job")
        samples = []
        for path in trained.samples():
            with Image.open(path) as img:
                samples.append(img.convert("RGB"))
        if not samples:
            samples = [
                note_image(
                    "No validation samples: validation_images was 0 (the default on the CPU),\n"
                    "so the last checkpoint was kept. Set validation_images to render some."
                )
            ]
        return (
            lora_name,
            pil_to_image_batch([loss]),
            pil_to_image_batch(fit_batch(samples)),
            trained.summary(lora_name),
        )
