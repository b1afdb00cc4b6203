"""A method study (`headshot sweep --methods ...`): ways of drawing the person compared on the same prompts
and seeds as the baseline, the course brief's method study.

  adapter            IP-Adapter FaceID with the reference photo, no training
  single-photo-lora  a LoRA trained on the varied dataset made from the reference photo (dataset.single_photo)
  lora               a LoRA trained on the full prepared dataset
  lora+adapter       that same LoRA with the adapter on top (no second training)

Both LoRA methods train with the same settings (the --lr/--rank/--alpha/--steps given, else the preset's),
so they differ in their data only. Face distance is measured against DATASET's photos for every method.
Each method is one run of the sweep: its job and pictures folders are named after what decides them, so
the same command run again reuses what finished.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..errors import BackendUnavailable, HeadshotError
from ..outputs import atomic_write_json
from ..train.job_reuse import fingerprint
from .plan import KEY_LENGTH, PlannedRun, SweepOptions, SweepPlan, planned_training_run

ADAPTER, SINGLE_PHOTO_LORA, LORA, LORA_ADAPTER = "adapter", "single-photo-lora", "lora", "lora+adapter"
METHODS = {
    ADAPTER: "IP-Adapter FaceID with the reference photo, no training",
    SINGLE_PHOTO_LORA: "a LoRA trained on the varied dataset made from the reference photo",
    LORA: "a LoRA trained on the full prepared dataset",
    LORA_ADAPTER: "the full-set LoRA with the FaceID adapter on top",
}
WITH_ADAPTER = (ADAPTER, LORA_ADAPTER)
DONE_MARK = ".sweep-single-photo.json"  # written last: a dataset folder without it was cut short


def parse_methods(text: str) -> list[str]:
    """`--methods adapter,lora` -> ["adapter", "lora"], each checked, repeats refused."""
    methods: list[str] = []
    for part in str(text).split(","):
        name = part.strip().lower()
        if name not in METHODS:
            raise HeadshotError(
                f"--methods {text!r}: unknown method {part.strip()!r}; choose from " + ", ".join(METHODS),
                "bad_option",
            )
        if name in methods:
            raise HeadshotError(f"--methods {text!r}: {name} is listed twice; list each method once", "bad_option")
        methods.append(name)
    return methods


def plan_methods(options: SweepOptions, inputs: dict, image_count: int) -> tuple[list[PlannedRun], Path | None]:
    """One run per method, in the order given, and the FaceID file when a method uses it (found here, so a
    missing file fails before any model loads)."""
    if len(options.runs) != 1:
        raise HeadshotError(
            "a method study trains each LoRA method with one setting: give one value per --lr/--rank/--alpha/"
            "--steps (compare settings in a sweep without --methods)",
            "bad_option",
        )
    if options.runs[0].get("trigger"):
        raise HeadshotError(
            "--trigger-variants and --methods do not mix: compare trigger words in a sweep without --methods",
            "bad_option",
        )
    methods = options.methods
    photo = _reference_photo(options) if set(methods) - {LORA} else None
    adapter_path = _adapter_file(options) if set(methods) & set(WITH_ADAPTER) else None
    settings = dict(options.runs[0])
    runs: list[PlannedRun] = []
    for method in methods:
        if method == ADAPTER:
            assert photo is not None and adapter_path is not None
            key = fingerprint(_file_digest(photo), _adapter_identity(options, adapter_path))[:KEY_LENGTH]
            runs.append(PlannedRun({}, None, f"adapter-{key}", 0, method=ADAPTER, identity=True))
        elif method == SINGLE_PHOTO_LORA:
            assert photo is not None
            dataset = single_photo_folder(options, photo)
            photo_inputs = {"single_photo": dataset.name, "base_model": inputs.get("base_model")}
            if inputs.get("vae"):  # as the base model: what the photo is encoded with
                photo_inputs["vae"] = inputs["vae"]
            run = planned_training_run(  # trained as `headshot train --single-photo` trains (unless --preset)
                options,
                settings,
                photo_inputs,
                _variant_count(),
                dataset_dir=dataset,
                preset="single_photo",
                method=SINGLE_PHOTO_LORA,
            )
            runs.append(run)
        else:  # lora and lora+adapter: one training job, found again by its name when both are asked
            run = planned_training_run(options, settings, inputs, image_count, method=LORA)
            if method == LORA_ADAPTER:
                assert photo is not None and adapter_path is not None
                key = fingerprint(_file_digest(photo), _adapter_identity(options, adapter_path))[:KEY_LENGTH]
                run.method, run.identity = LORA_ADAPTER, True
                run.pictures_name = f"lora-adapter-{run.name.removeprefix('lora-')}-{key}"
            runs.append(run)
    jobs_seen: set[str] = set()
    for run in runs:  # a job trained by an earlier run of the study counts once in the progress estimate
        if run.train is not None:
            if run.name in jobs_seen:
                run.steps_estimate = 0
            jobs_seen.add(run.name)
    return runs, adapter_path


def _reference_photo(options: SweepOptions) -> Path:
    photo = options.reference
    if photo is None:
        raise HeadshotError(
            "--methods adapter, single-photo-lora and lora+adapter draw from one photo of the person: give it "
            "with --reference PHOTO",
            "bad_option",
        )
    photo = Path(photo).expanduser()
    if photo.is_dir():
        raise HeadshotError(f"--reference {photo} is a folder; give one photo of the person", "bad_option")
    if not photo.is_file():
        raise HeadshotError(f"--reference {photo}: not found; give one photo of the person", "not_found")
    return photo


def _adapter_file(options: SweepOptions) -> Path:
    """The FaceID file, the insightface model pack FaceID reads faces with, and the image encoder folder."""
    from ..faces.insightface_onnx import REQUIRED_FILES, default_search_dirs, find_model_pack
    from ..families.checkpoint_detection import base_model_family
    from ..generate.adapter_files import ADAPTER_SUFFIXES, adapter_dirs, find_adapter

    if not 0 <= options.adapter_weight <= 2:
        raise HeadshotError(
            f"--adapter-weight {options.adapter_weight}: use a value from 0 to 2 (0.6-1.0 is usual)", "bad_option"
        )
    if options.adapter and Path(options.adapter).suffix.lower() not in ADAPTER_SUFFIXES + ("",):
        raise HeadshotError(f"--adapter {options.adapter}: give a .safetensors or .bin FaceID file", "bad_option")
    if options.image_encoder is not None and not Path(options.image_encoder).is_dir():
        raise HeadshotError(f"--image-encoder {options.image_encoder}: not a folder", "not_found")
    dirs = [Path(d).expanduser() for d in options.face_model_dirs]
    if find_model_pack(dirs + default_search_dirs()) is None:
        raise BackendUnavailable(
            "the adapter methods read the reference face with insightface's buffalo_l (FaceID was trained on its "
            f"ArcFace embedding); put {', '.join(REQUIRED_FILES)} in <models>/insightface/models/buffalo_l/ and "
            "name that folder with --face-models"
        )
    family = base_model_family(options.base_model)
    return find_adapter(options.adapter or None, adapter_dirs(options.adapter_dirs), family.name if family else "")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _adapter_identity(options: SweepOptions, adapter: Path) -> list:
    """What decides the adapter's pictures besides the prompts: the file, its weight, the image encoder."""
    encoder = Path(options.image_encoder).name if options.image_encoder else None
    return [adapter.name, adapter.stat().st_size, options.adapter_weight, encoder]


def _variant_count() -> int:
    from ..dataset.single_photo import VARIANTS

    return len(VARIANTS)


def _single_photo_recipe() -> str:
    """What decides the single-photo dataset besides the photo (a changed recipe makes a new one)."""
    from ..dataset.single_photo import FRAMINGS, VARIANTS

    return repr((FRAMINGS, VARIANTS))


def single_photo_folder(options: SweepOptions, photo: Path) -> Path:
    """OUT/datasets/single-photo-<key>: named after the photo's bytes and the recipe that varies it."""
    key = fingerprint(_file_digest(photo), _single_photo_recipe(), options.face_backend)[:KEY_LENGTH]
    return options.out / "datasets" / f"single-photo-{key}"


def make_single_photo_dataset(plan: SweepPlan, run: PlannedRun) -> Path:
    """The run's dataset made from the reference photo by `dataset.single_photo.prepare_single_photo`, with
    the sweep dataset's trigger and class (so the prompts read the same); made once, reused after."""
    from ..dataset.prepare_settings import PrepareSettings
    from ..dataset.single_photo import prepare_single_photo

    options = plan.options
    assert options.reference is not None and run.train is not None  # plan_methods made it so
    folder = Path(run.train.dataset_dir)
    if (folder / DONE_MARK).is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # our own dataset, cut short: made again from the photo
    settings = PrepareSettings(
        trigger=plan.trigger,
        class_word=plan.class_word,
        resolution=_dataset_resolution(options.dataset) or PrepareSettings().resolution,
        face_backend=options.face_backend,
        face_model_dirs=[Path(d) for d in options.face_model_dirs],
    )
    prepare_single_photo(Path(options.reference).expanduser(), folder, settings)
    atomic_write_json(folder / DONE_MARK, {"photo": str(options.reference), "trigger": plan.trigger})
    return folder


def _dataset_resolution(dataset: Path) -> int | None:
    """The resolution DATASET was prepared at (its report.json), so both LoRAs see crops of one size."""
    from ..evaluate.sweep_record import read_json

    value = (read_json(Path(dataset) / "report.json") or {}).get("resolution")
    fits = isinstance(value, int) and not isinstance(value, bool) and value % 64 == 0 and 256 <= value <= 2048
    return value if fits else None


def identity_for(plan: SweepPlan, arcface):
    """The reference photo's FaceID identity (screened as prepare screens a photo); `arcface` is the sweep's
    insightface analyzer, or None when it measures with dlib only (then buffalo_l is opened here)."""
    from ..faces import FACE_BACKENDS
    from ..sampling.identity_reference import identity_from_photo

    options = plan.options
    assert plan.adapter_path is not None and options.reference is not None
    analyzer = arcface or FACE_BACKENDS["insightface"]([Path(d).expanduser() for d in options.face_model_dirs], True)
    assert analyzer is not None  # required=True: a missing pack raises BackendUnavailable
    return identity_from_photo(
        Path(options.reference).expanduser(),
        analyzer,
        plan.adapter_path,
        weight=options.adapter_weight,
        image_encoder=options.image_encoder,
    )


def method_fields(plan: SweepPlan, run: PlannedRun) -> dict:
    """What sweep.json says of a run's method: its name and, with the adapter, which file at which weight."""
    if run.method is None:
        return {}
    fields: dict = {"method": run.method}
    if run.identity and plan.adapter_path is not None:
        fields.update(adapter=plan.adapter_path.name, adapter_weight=plan.options.adapter_weight)
    return fields


def method_header(plan: SweepPlan) -> dict:
    """sweep.json's header for a method study: the methods, the reference photo, the adapter file."""
    options = plan.options
    if not options.methods:
        return {}
    return {
        "methods": list(options.methods),
        "method_descriptions": {m: METHODS[m] for m in options.methods},
        "reference_photo": str(options.reference) if options.reference else None,
        "adapter": str(plan.adapter_path) if plan.adapter_path else None,
        "adapter_weight": options.adapter_weight if plan.adapter_path else None,
    }
