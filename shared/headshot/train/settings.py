"""Training settings: what a person asks for, resolved against a preset into a full plan.

TrainSettings is validated data: building one checks every key and value (an unknown key is refused with a
"did you mean"), so a job.json, a CLI call and a host node all get the same sentences and codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ..errors import HeadshotError
from ..options import Field, Flag, Number, OptionModel, PathText, Text, WholeNumber
from ..outputs import safe_name
from .presets import PRESETS, planned_steps

OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
BACKENDS = ("builtin", "sd-scripts")
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
MAX_RESOLUTION = 2048  # beyond it the latents alone take gigabytes: a typo, not a wish
MAX_SEED = 2**32 - 1

#: how people name each setting (the CLI's options; hosts show the same words)
OPTION = {
    "dataset_dir": "dataset folder",
    "base_model": "--base-model",
    "vae": "--vae",
    "out_dir": "--out",
    "output_name": "--name",
    "preset": "--preset",
    "backend": "--backend",
    "steps": "--steps",
    "resolution": "--resolution",
    "rank": "--rank",
    "alpha": "--alpha",
    "lr": "--lr",
    "text_encoder_lr": "--text-encoder-lr",
    "optimizer": "--optimizer",
    "scheduler": "--scheduler",
    "warmup_steps": "--warmup-steps",
    "batch_size": "batch size",
    "gradient_checkpointing": "gradient checkpointing",
    "min_snr_gamma": "min-SNR gamma",
    "noise_offset": "noise offset",
    "flip": "--no-flip",
    "shuffle_captions": "caption shuffling",
    "caption_variants": "caption variants",
    "seed": "--seed",
    "checkpoint_every": "--checkpoint-every",
    "mixed_precision": "--mixed-precision",
    "no_half_vae": "--no-half-vae",
    "device": "--device",
    "validation_images": "--validation-images",
    "validation_steps": "validation steps",
    "validation_prompt": "--validation-prompt",
    "face_backend": "--face-backend",
    "face_model_dirs": "--face-models",
    "tokenizer_dirs": "--tokenizer",
    "class_images_dir": "--class-images",
    "class_image_count": "--class-image-count",
    "prior_loss_weight": "--prior-loss-weight",
    "class_prompt": "class prompt",
    "sd_scripts_repo": "--sd-scripts",
    "sd_scripts_python": "--sd-scripts-python",
    "cache_dir": "--cache-dir",
}
#: what a resumed job may take from the caller: these do not change what the saved steps were trained for
RESUMABLE_CHANGES = (
    "steps",
    "checkpoint_every",
    "mixed_precision",
    "no_half_vae",
    "device",
    "gradient_checkpointing",
    "validation_images",
    "validation_steps",
    "validation_prompt",
    "face_backend",
    "face_model_dirs",
    "tokenizer_dirs",
    "output_name",
    "cache_dir",
)
#: paths: always the caller's, never followed from job.json (a job folder is data)
CALLER_PATHS = (
    "dataset_dir",
    "base_model",
    "vae",
    "class_images_dir",
    "sd_scripts_repo",
    "sd_scripts_python",
    "cache_dir",
)


class TrainSettings(OptionModel):
    OPTION_NAMES: ClassVar[dict[str, str]] = OPTION
    VALUE_HINTS: ClassVar[dict[str, str]] = {
        "face_model_dirs": "must be a list of folders",
        "tokenizer_dirs": "must be a list of folders",
    }
    ABOUT: ClassVar[str] = "training"

    dataset_dir: PathText
    base_model: PathText
    out_dir: PathText
    vae: PathText | None = None  # a VAE file used in place of the base model's (kohya's --vae)
    output_name: Text = "headshot_lora"
    preset: Text = "balanced"
    backend: Text = "builtin"
    # None means "from the preset" (or, for resolution, from the dataset)
    steps: WholeNumber | None = None
    resolution: WholeNumber | None = None
    rank: WholeNumber | None = None
    alpha: Number | None = None
    lr: Number | None = None
    text_encoder_lr: Number | None = None  # None: the text encoder stays frozen (its embeddings are cached)
    optimizer: Text | None = None
    scheduler: Text | None = None
    warmup_steps: WholeNumber | None = None
    batch_size: WholeNumber = 1
    gradient_checkpointing: Flag | None = None
    min_snr_gamma: Number | None = None
    noise_offset: Number | None = None
    flip: Flag = True
    shuffle_captions: Flag = True
    caption_variants: WholeNumber = 8  # shuffles per caption computed once when the text encoder is frozen
    seed: WholeNumber = 42
    checkpoint_every: WholeNumber | None = None
    mixed_precision: Text = "auto"  # auto | no | fp16 | bf16
    no_half_vae: Flag = False  # encode the photos with the VAE in fp32 (kohya's --no_half_vae)
    device: Text = "auto"
    # likeness-scored checkpoint choice
    validation_images: WholeNumber | None = None  # None: 4 on a GPU, 0 on the CPU (minutes per image there)
    validation_steps: WholeNumber = 20
    validation_prompt: Text | None = None
    face_backend: Text = "auto"
    face_model_dirs: list[PathText] = Field(default_factory=list)
    tokenizer_dirs: list[PathText] = Field(default_factory=list)
    # prior preservation
    class_images_dir: PathText | None = None
    class_image_count: WholeNumber = 0  # >0 with no class_images_dir: generate them once with the base model
    prior_loss_weight: Number = 1.0
    class_prompt: Text | None = None
    # where encoded latents and text embeddings are kept (None: <out>/input-cache); a sweep shares one
    cache_dir: PathText | None = None
    # sd-scripts backend
    sd_scripts_repo: PathText | None = None
    sd_scripts_python: PathText | None = None

    def check_values(self) -> None:
        self.validate()

    def resolved(self, image_count: int, repeats: int, dataset_resolution: int | None, on_gpu: bool) -> TrainSettings:
        """A copy with every None filled from the preset, validated."""
        self.validate()
        preset = PRESETS[self.preset]
        out = self.copied()
        out.steps = self.steps if self.steps is not None else planned_steps(preset, image_count)
        out.resolution = self.resolution if self.resolution is not None else dataset_resolution or 512
        for name in (
            "rank",
            "alpha",
            "lr",
            "optimizer",
            "scheduler",
            "min_snr_gamma",
            "noise_offset",
            "gradient_checkpointing",
        ):
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

    def validate(self) -> None:  # type: ignore[override]  # pydantic's classmethod: only nested models use it
        """Every value a person (or a job.json) can get wrong, checked before anything loads; one line each.
        Building settings runs it; call it again after changing a field."""

        def bad(name: str, why: str):
            raise HeadshotError(f"{OPTION[name]} {getattr(self, name)!r}: {why}", "bad_option")

        def number(name: str, low=None, high=None, integer=False, low_open=False):
            value = getattr(self, name)
            if value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                bad(name, "must be a whole number" if integer else "must be a number")
            if (
                value != value
                or (low is not None and (value <= low if low_open else value < low))
                or (high is not None and value > high)
            ):
                bad(
                    name,
                    f"must be {'above' if low_open else 'at least'} {low}"
                    + (f" and at most {high}" if high is not None else ""),
                )

        for name, choices in (
            ("backend", BACKENDS),
            ("preset", tuple(PRESETS)),
            ("optimizer", OPTIMIZERS),
            ("scheduler", SCHEDULERS),
            ("mixed_precision", MIXED_PRECISIONS),
        ):
            value = getattr(self, name)
            if value is not None and value not in choices:
                bad(name, f"choose one of {', '.join(choices)}")
        safe_name(self.output_name, "--name")
        for name in ("dataset_dir", "base_model", "out_dir"):
            if not str(getattr(self, name) or "").strip():
                bad(name, "must be given")
        for name in ("steps", "checkpoint_every", "batch_size", "caption_variants", "validation_steps"):
            number(name, 1, integer=True)
        for name in ("warmup_steps", "class_image_count", "validation_images"):
            number(name, 0, integer=True)
        number("seed", 0, MAX_SEED, integer=True)
        number("rank", 1, 1024, integer=True)
        number("resolution", 32, MAX_RESOLUTION, integer=True)
        if self.resolution is not None and self.resolution % 8:
            bad("resolution", f"must be a multiple of 8 (try {self.resolution // 8 * 8})")
        number("alpha", 0, low_open=True)
        number("lr", 0, 10, low_open=True)
        number("text_encoder_lr", 0, 10, low_open=True)
        for name in ("min_snr_gamma", "noise_offset", "prior_loss_weight"):
            number(name, 0)
        for name in ("face_model_dirs", "tokenizer_dirs"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                bad(name, "must be a list of folders")


def resume_settings(
    recorded: dict, requested: TrainSettings, given: set[str] | None, out_dir: str, steps_done: int
) -> TrainSettings:
    """The settings a resumed job runs with: what was recorded, plus what the caller may change now.

    `given`: the fields the caller chose (None: all of them; a None value always means "not chosen").
    Paths come from the caller and `out_dir` (where the job folder is now). A change to anything that
    shapes what the saved steps learned is refused, naming each option.
    """
    base = TrainSettings.from_dict(
        {**requested.to_dict(), **{k: v for k, v in recorded.items() if k not in CALLER_PATHS}}
    )
    chosen = set(TrainSettings.field_names()) if given is None else set(given)
    differ = []
    for name in TrainSettings.field_names():
        new, old = getattr(requested, name), recorded.get(name)
        if name in CALLER_PATHS or name == "out_dir":
            setattr(base, name, new)
        elif name in chosen and new is not None and new != old:
            if name in RESUMABLE_CHANGES or old is None:  # None: never resolved, nothing was trained with it
                setattr(base, name, new)
            else:
                differ.append(f"{OPTION[name]} (was {old!r}, now {new!r})")
    recorded_class_images = recorded.get("class_images_dir")
    if (recorded_class_images or None) != (requested.class_images_dir or None) and not (
        recorded_class_images
        and requested.class_images_dir
        and Path(recorded_class_images).resolve() == Path(requested.class_images_dir).resolve()
    ):
        differ.append(f"--class-images (was {recorded_class_images!r}, now {requested.class_images_dir!r})")
    if differ:
        raise HeadshotError(
            "the job cannot resume with other " + "; ".join(differ) + ": run it with the options it "
            "started with, or start a new job in another --out folder",
            "resume_mismatch",
        )
    base.out_dir = out_dir
    if base.steps is not None and base.steps < steps_done:
        raise HeadshotError(
            f"--steps {base.steps}: this job has already trained {steps_done} steps; ask for at least that many",
            "bad_option",
        )
    base.validate()
    return base
