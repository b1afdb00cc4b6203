"""Training settings: what a person asks for, resolved against a preset into a full plan."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import HeadshotError
from .presets import PRESETS, planned_steps

OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
BACKENDS = ("builtin", "sd-scripts")


@dataclass
class TrainSettings:
    dataset_dir: str
    base_model: str
    out_dir: str
    output_name: str = "headshot_lora"
    preset: str = "balanced"
    backend: str = "builtin"
    # None means "from the preset" (or, for resolution, from the dataset)
    steps: int | None = None
    resolution: int | None = None
    rank: int | None = None
    alpha: float | None = None
    lr: float | None = None
    text_encoder_lr: float | None = None  # None: the text encoder stays frozen (its embeddings are cached)
    optimizer: str | None = None
    scheduler: str | None = None
    warmup_steps: int | None = None
    batch_size: int = 1
    gradient_checkpointing: bool | None = None
    min_snr_gamma: float | None = None
    noise_offset: float | None = None
    flip: bool = True
    shuffle_captions: bool = True
    caption_variants: int = 8  # shuffles per caption computed once when the text encoder is frozen
    seed: int = 42
    checkpoint_every: int | None = None
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16
    device: str = "auto"
    # likeness-scored checkpoint choice
    validation_images: int | None = None  # None: 4 on a GPU, 0 on the CPU (minutes per image there)
    validation_steps: int = 20
    validation_prompt: str | None = None
    face_backend: str = "auto"
    face_model_dirs: list[str] = field(default_factory=list)
    tokenizer_dirs: list[str] = field(default_factory=list)
    # prior preservation
    class_images_dir: str | None = None
    class_image_count: int = 0  # >0 with no class_images_dir: generate them once with the base model
    prior_loss_weight: float = 1.0
    class_prompt: str | None = None
    # sd-scripts backend
    sd_scripts_repo: str | None = None
    sd_scripts_python: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def resolved(self, image_count: int, repeats: int, dataset_resolution: int | None, on_gpu: bool) -> "TrainSettings":
        """A copy with every None filled from the preset, validated."""
        if self.preset not in PRESETS:
            raise HeadshotError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}", "bad_option")
        preset = PRESETS[self.preset]
        out = TrainSettings.from_dict(self.to_dict())
        out.steps = self.steps or planned_steps(preset, image_count)
        out.resolution = self.resolution or dataset_resolution or 512
        for name in ("rank", "alpha", "lr", "optimizer", "scheduler", "min_snr_gamma", "noise_offset", "gradient_checkpointing"):
            if getattr(out, name) is None:
                setattr(out, name, preset.value(name))
        if out.warmup_steps is None:
            out.warmup_steps = round(out.steps * preset.value("warmup_share"))
        if out.checkpoint_every is None:
            out.checkpoint_every = min(out.steps, preset.value("checkpoint_every"))
        if out.validation_images is None:
            out.validation_images = 4 if on_gpu else 0
        out.validate()
        return out

    def validate(self) -> None:
        def bad(message: str):
            raise HeadshotError(message, "bad_option")

        if self.backend not in BACKENDS:
            bad(f"unknown backend {self.backend!r}; choose builtin or sd-scripts")
        if self.optimizer not in OPTIMIZERS:
            bad(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            bad(f"unknown learning-rate schedule {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if self.steps is not None and self.steps < 1:
            bad("steps must be at least 1")
        if self.rank is not None and not 1 <= self.rank <= 1024:
            bad(f"rank {self.rank} is out of range (1–1024)")
        if self.resolution is not None and (self.resolution % 8 or self.resolution < 32):
            bad(f"resolution {self.resolution} must be a multiple of 8 (64 for SD models) and at least 32")
        if self.lr is not None and not 0 < self.lr <= 10:
            bad(f"learning rate {self.lr} is out of range")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            bad("mixed precision must be auto, no, fp16 or bf16")
