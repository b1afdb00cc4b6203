"""A sweep's options, checked before any model loads, and the plan they make: each run's training settings
and job folder, and the one picture folder per run (and for the baseline) named after what decides it.

Folder names carry a fingerprint of what decides the result, so running the same command again finds
finished work: OUT/jobs/<run>-<key> (training: the run's settings, the dataset, the base model) and
OUT/pictures/<run>-<key>-<pictures key> (the prompts, seeds, sizes, steps and evaluation models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HeadshotError
from ..evaluate.sweep_grid import run_label
from ..options import check_positive, check_seeds
from ..outputs import check_writable
from ..train.job_reuse import fingerprint
from ..train.settings import TrainSettings

DEFAULT_STYLE = "linkedin_corporate"
KEY_LENGTH = 10
#: training settings that do not change what a run learns (left out of its fingerprint)
NOT_RESULT_SHAPING = (
    "dataset_dir",
    "base_model",
    "out_dir",
    "output_name",
    "device",
    "mixed_precision",
    "no_half_vae",
    "face_backend",
    "face_model_dirs",
    "tokenizer_dirs",
    "checkpoint_every",
    "cache_dir",
)


@dataclass
class SweepOptions:
    dataset: Path
    base_model: str
    out: Path
    runs: list[dict]  # each run's settings (sweep_grid.SETTING_KEYS), checked
    styles: list[str] = field(default_factory=list)  # default: DEFAULT_STYLE (unless prompts_file)
    prompts_file: Path | None = None  # one prompt a line; {subject} stands for the trigger and class
    style_dirs: list[Path] = field(default_factory=list)
    count: int = 4  # pictures per style or prompt: seeds seed .. seed + count - 1
    size: tuple[int, int] | None = None
    sample_steps: int | None = None
    seed: int = 0
    clip_model: Path | None = None
    device: str = "auto"
    preset: str | None = None
    resolution: int | None = None
    train_seed: int = 42
    validation_images: int = 0  # the sweep measures each run itself; per-checkpoint validation is extra time
    face_backend: str = "auto"
    face_model_dirs: list[str] = field(default_factory=list)
    tokenizer_dirs: list[str] = field(default_factory=list)
    vae: str | None = None  # a VAE file in place of the base model's own, for training and the pictures
    # a method study (sweep/methods.py): each method one run, on the same prompts and seeds
    methods: list[str] = field(default_factory=list)
    reference: Path | None = None  # the one photo of the person the adapter and single-photo LoRA use
    adapter: str | None = None  # the FaceID file (a path or a name in adapter_dirs); "" or None: the usual one
    adapter_dirs: list[Path] = field(default_factory=list)
    adapter_weight: float = 0.8
    image_encoder: Path | None = None  # the CLIP image encoder FaceID Plus needs


@dataclass
class PlannedRun:
    settings: dict  # what the sweep varies
    train: TrainSettings | None  # out_dir: its job folder; dataset_dir: the dataset or its variant; None: untrained
    name: str  # <label>-<key>: the job folder's name (or, for a run that does not train, its pictures')
    steps_estimate: int  # for the progress estimate
    method: str | None = None  # in a method study (sweep/methods.py)
    identity: bool = False  # drawn with the FaceID adapter and the reference photo
    pictures_name: str = ""  # default: name (lora+adapter shares the LoRA run's job, not its pictures)

    @property
    def job_dir(self) -> Path | None:
        return Path(self.train.out_dir) if self.train is not None else None

    @property
    def train_dir(self) -> Path:
        """The job folder of a run that trains."""
        assert self.train is not None, "a run that does not train has no job folder"
        return Path(self.train.out_dir)


@dataclass
class SweepPlan:
    options: SweepOptions
    runs: list[PlannedRun]
    prompts: list[str]  # from --prompts (empty: styles)
    styles: list[str]
    trigger: str  # the dataset's
    class_word: str
    pictures_key: str
    clip_dir: Path | None
    clip_searched: str  # where CLIP was looked for (for the warning when none is found)
    adapter_path: Path | None = None  # the FaceID file found, in a method study with an adapter

    def pictures_dir(self, name: str) -> Path:
        return self.options.out / "pictures" / f"{name}-{self.pictures_key}"

    @property
    def pictures_per_run(self) -> int:
        return self.options.count * (len(self.prompts) or len(self.styles))


def read_prompts(path: Path) -> list[str]:
    """--prompts FILE: one prompt a line; empty lines and lines starting with # are left out."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HeadshotError(
            f"--prompts {path} cannot be read ({exc}); give a text file, one prompt a line", "not_found"
        ) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise HeadshotError(f"--prompts {path} holds no prompt; write one prompt a line", "bad_option")
    return prompts


def plan_sweep(options: SweepOptions) -> SweepPlan:
    """Check every option and input (no model loads, nothing written but a probe in OUT) and name the folders."""
    from ..evaluate.clip_model import find_clip_model
    from ..generate.preflight import check_generate_options
    from ..train.dataset import load_training_set
    from ..train.launch import check_inputs, input_fingerprints

    if not options.runs:
        raise HeadshotError("a sweep needs runs: give --lr (e.g. --lr 1e-4,5e-4) or --runs FILE", "bad_option")
    if options.prompts_file and options.styles:
        raise HeadshotError("give --styles or --prompts, not both", "bad_option")
    check_positive(options.count, "--count")
    check_positive(options.sample_steps, "--sample-steps")
    check_seeds(options.seed, options.count)
    training_set = load_training_set(options.dataset)
    trigger = training_set.trigger or "ohwx"
    class_word = training_set.class_word or "person"
    prompts = read_prompts(options.prompts_file) if options.prompts_file else []
    styles = [] if prompts else list(options.styles or [DEFAULT_STYLE])
    for style in styles:
        check_generate_options(
            style=style,
            style_dirs=options.style_dirs,
            count=options.count,
            seed=options.seed,
            steps=options.sample_steps,
        )
    clip_dir, searched = find_clip_model(options.clip_model)
    check_writable(options.out)
    first = training_settings(options, options.runs[0] if options.runs else {})
    check_inputs(first)  # the dataset, the base model's presence, the options; probes OUT/jobs/pending
    _remove_probe_folder(Path(first.out_dir))
    inputs = input_fingerprints(first)
    adapter_path = None
    if options.methods:
        from .methods import plan_methods

        runs, adapter_path = plan_methods(options, inputs, len(training_set.images))
    else:
        runs = [
            planned_training_run(options, settings, inputs, len(training_set.images), dataset_trigger=trigger)
            for settings in options.runs
        ]
    prompts_text = {"styles": styles, "prompts": prompts, "style_files": _style_files(styles, options.style_dirs)}
    pictures_key = fingerprint(
        prompts_text,
        [options.count, options.seed, options.size, options.sample_steps, options.device],
        inputs,
        [str(clip_dir) if clip_dir else None, options.face_backend],
    )[:KEY_LENGTH]
    return SweepPlan(
        options, runs, prompts, styles, trigger, class_word, pictures_key, clip_dir, searched, adapter_path
    )


def training_settings(options: SweepOptions, settings: dict, preset: str | None = None) -> TrainSettings:
    """The TrainSettings of one run (its out_dir a placeholder until the run is named)."""
    return TrainSettings(
        dataset_dir=str(options.dataset),
        base_model=str(options.base_model),
        out_dir=str(options.out / "jobs" / "pending"),
        output_name="lora",
        preset=options.preset or preset or "balanced",
        steps=settings.get("steps"),
        rank=settings.get("rank"),
        alpha=settings.get("alpha"),
        lr=settings.get("lr"),
        resolution=options.resolution,
        seed=options.train_seed,
        device=options.device,
        validation_images=options.validation_images,
        face_backend=options.face_backend,
        face_model_dirs=[str(d) for d in options.face_model_dirs],
        tokenizer_dirs=[str(d) for d in options.tokenizer_dirs],
        vae=options.vae,
        cache_dir=str(options.out / "input-cache"),  # every run encodes the same photos: once is enough
    )


def planned_training_run(
    options: SweepOptions,
    settings: dict,
    inputs: dict,
    image_count: int,
    *,
    dataset_dir: Path | None = None,
    preset: str | None = None,
    method: str | None = None,
    dataset_trigger: str | None = None,
) -> PlannedRun:
    """A run that trains: its settings, its job folder named after what decides the result (the settings,
    the inputs' fingerprints), and its dataset (DATASET, `dataset_dir`, or a trigger variant)."""
    from ..train.presets import PRESETS, planned_steps

    train = training_settings(options, settings, preset)
    shaping = {k: v for k, v in train.to_dict().items() if k not in NOT_RESULT_SHAPING}
    label = run_label(settings)
    name = f"{label}-{fingerprint(settings, shaping, inputs)[:KEY_LENGTH]}"
    if method:  # the method names the job: a LoRA of the whole set and one of a single photo read apart
        name = f"{method}-{name}"
    train.out_dir = str(options.out / "jobs" / name)
    train.output_name = label
    variant = settings.get("trigger")
    if dataset_dir is not None:
        train.dataset_dir = str(dataset_dir)
    elif variant and variant != dataset_trigger:  # the dataset with its captions' trigger word replaced (variants.py)
        train.dataset_dir = str(options.out / "datasets" / variant)
    steps = settings.get("steps") or planned_steps(PRESETS[train.preset], image_count)
    return PlannedRun(settings, train, name, steps, method=method)


def _style_files(styles: list[str], style_dirs) -> list:
    """What each style says (its prompt may change between versions): part of the pictures' fingerprint."""
    from ..generate.styles import get_style

    return [repr(get_style(name, style_dirs)) for name in styles]


def _remove_probe_folder(folder: Path) -> None:
    """check_inputs made OUT/jobs/pending to prove it can be written; leave no empty folder behind."""
    try:
        folder.rmdir()
    except OSError:
        pass
