"""The service's settings: where its data lives, which queue and database, and every limit."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import HeadshotError

#: the folders under --data (shared storage when workers run on several machines)
UPLOADS, MODELS, IMAGES = "uploads", "models", "images"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 50 * 1024 * 1024
    min_photos: int = 3
    max_photos: int = 20
    max_photo_bytes: int = 20 * 1024 * 1024
    max_photo_pixels: int = 50_000_000
    max_images: int = 100
    max_concurrent_jobs: int = 2  # a user's queued + running jobs
    daily_jobs: int = 50  # jobs a user may start in any 24 hours
    max_steps: int = 5000
    max_side: int = 2048  # width / height of generated pictures


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path
    base_model: str = ""
    vae: str | None = None  # a VAE file in place of the base model's own (--vae)
    database_url: str | None = None  # None: SQLite under data_dir
    queue_url: str | None = None  # None: huey's SQLite queue under data_dir; redis://… for many machines
    limits: Limits = field(default_factory=Limits)
    max_attempts: int = 3  # a job whose worker keeps dying is failed after this many tries
    default_seconds_per_step: float = 1.5  # training estimate before this server has measured itself
    stale_after_s: float = 120.0  # a running job with no heartbeat for this long has lost its worker
    heartbeat_s: float = 10.0
    device: str = "auto"
    face_backend: str = "auto"
    face_model_dirs: tuple[str, ...] = ()
    tokenizer_dirs: tuple[str, ...] = ()
    style_dirs: tuple[str, ...] = ()
    restore_model: str | None = None  # a face-restoration model file: restoration runs only when set
    detailer: bool = True
    trigger: str = "ohwx"
    validation_images: int | None = None  # None: the trainer's default (4 on a GPU, 0 on the CPU)
    # training steps between checkpoints (None: the preset's): a job whose worker died resumes from the last one
    checkpoint_every: int | None = None
    immediate: bool = False  # run tasks inside the API process (tests of the API alone)
    public_url: str = ""  # prefix of the URLs in responses (empty: relative to this server)
    private_webhooks: bool = False  # let webhooks call loopback / private addresses (a trusted network)
    # one-photo mode (a reference_image instead of a model_id): the IP-Adapter FaceID file, a path or a name
    # looked up in adapter_dirs and the hosts' folders (None: the base model family's usual file)
    adapter: str | None = None
    adapter_dirs: tuple[str, ...] = ()
    image_encoder: str | None = None  # the CLIP image encoder folder FaceID Plus needs
    adapter_weight: float = 0.8

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'service.db'}"

    def folder(self, kind: str, item_id: str) -> Path:
        return self.data_dir / kind / item_id

    def with_changes(self, **changes) -> ServiceConfig:
        return replace(self, **changes)


def check_config(config: ServiceConfig, needs_model: bool = True) -> ServiceConfig:
    """Refuse a configuration that cannot work before a port is opened or a worker starts."""
    data = Path(config.data_dir).expanduser()
    if data.exists() and not data.is_dir():
        raise HeadshotError(f"--data {data} is a file; give a folder for the service's data", "not_a_folder")
    data.mkdir(parents=True, exist_ok=True)
    if not os.access(data, os.W_OK):
        raise HeadshotError(f"--data {data} cannot be written; choose a folder you own", "not_writable")
    if needs_model and not config.base_model:
        raise HeadshotError("--base-model is needed: the checkpoint every job trains and draws with", "bad_option")
    if needs_model and not Path(config.base_model).expanduser().exists():
        raise HeadshotError(
            f"--base-model {config.base_model}: no such file or folder (give a .safetensors checkpoint or a "
            "diffusers folder)",
            "base_model_not_found",
        )
    if config.vae:
        from ..train.vae_files import existing_vae_file

        existing_vae_file(config.vae)
    elif needs_model:
        from ..families.checkpoint_detection import base_model_family

        # a checkpoint saved without a VAE is refused now, naming --vae, rather than in every job
        base_model_family(config.base_model, needs_vae=True)
    if config.queue_url and not config.queue_url.startswith(("redis://", "rediss://", "sqlite:///")):
        raise HeadshotError(f"--queue {config.queue_url}: give redis://HOST:PORT/DB or sqlite:///FILE", "bad_option")
    if config.checkpoint_every is not None and config.checkpoint_every < 1:
        raise HeadshotError("--checkpoint-every must be at least 1 (training steps between checkpoints)", "bad_option")
    if config.max_attempts < 1:
        raise HeadshotError("max attempts must be at least 1", "bad_option")
    return config.with_changes(data_dir=data.resolve())
