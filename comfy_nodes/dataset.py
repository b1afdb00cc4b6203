"""Prepare Dataset: the core's prepare (screening, framing, captions, kohya layout) as a node."""

from __future__ import annotations

from pathlib import Path

from headshot.dataset.tagging import tagger_choices
from headshot.errors import HeadshotError
from headshot.outputs import safe_name

from . import host
from .common import (
    CATEGORY,
    face_analyzer,
    face_backend_input,
    folder_listing,
    resolve_folder,
    split_names,
)
from .images import no_images, pil_to_image_batch
from .paths import RULE, allowed_path, user_path

TAGGERS = list(tagger_choices())


def dataset_dir(name: str) -> Path:
    """Where the dataset called `name` is written: <headshot_jobs>/datasets/<name> (never a link out of it)."""
    name = safe_name((name or "").strip(), "Prepare Dataset dataset_name")
    return allowed_path(host.jobs_root() / "datasets" / name, "Prepare Dataset dataset_name")


class HeadshotPrepareDataset:
    DESCRIPTION = (
        "Screens the photos (face found, one person, sharp, not a duplicate, same identity), frames "
        "each face as a square headshot crop, captions it with the trigger word and writes the kohya "
        "dataset that Train Identity LoRA reads. Every rejected photo gets a reason in the report."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "photos_folder": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Folder of the person's photos: connect Load "
                        "Photos' photos_folder, or type a path (relative: ComfyUI's input "
                        "folder)." + RULE,
                    },
                ),
                "dataset_name": (
                    "STRING",
                    {
                        "default": "my_identity",
                        "tooltip": "Name of the dataset folder, "
                        "written under output/headshot_jobs/datasets/ (a re-run replaces "
                        "only the files it wrote there). No '/', '\\' or '..'.",
                    },
                ),
                "trigger": (
                    "STRING",
                    {
                        "default": "ohwx",
                        "tooltip": "The rare word that will stand for the person "
                        "in prompts (one word; it names the kohya image folder, so no '/', "
                        "'\\' or '..').",
                    },
                ),
                "class_word": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "man, woman, person…; empty: detected where "
                        "the face model can tell, else 'person'. It names the kohya image "
                        "folder, so no '/', '\\' or '..'.",
                    },
                ),
                "resolution": (
                    "INT",
                    {
                        "default": 512,
                        "min": 256,
                        "max": 2048,
                        "step": 64,
                        "tooltip": "Side of the square crops: 512 for SD1.5, 768 for SD2, 1024 for SDXL.",
                    },
                ),
                "face_backend": face_backend_input(),
                "tagger": (
                    TAGGERS,
                    {
                        "default": "auto",
                        "tooltip": "Caption tagger: WD14 or DeepDanbooru ONNX "
                        "folders in models/taggers; none (or auto without a model): captions are "
                        "the trigger and class only.",
                    },
                ),
            },
            "optional": {
                "keep": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "File names to keep even when screening rejects them (comma or line separated).",
                    },
                ),
                "reference_photo": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Path of a photo that pins who the person "
                        "is when most of the set shows someone else." + RULE,
                    },
                ),
                "repeats": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 100,
                        "tooltip": "kohya repeats per epoch; 0: chosen from the photo count.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("STRING", "IMAGE", "STRING", "IMAGE")
    RETURN_NAMES = ("dataset_path", "kept_crops", "report", "contact_sheet")
    OUTPUT_TOOLTIPS = (
        "The dataset folder (img/, dataset.toml, report.json): connect it to Train Identity LoRA.",
        "The kept headshot crops, as they will be trained.",
        "Each photo kept or rejected, with its reason.",
        "Every photo on one sheet: kept in green, rejected in red with the reason.",
    )
    FUNCTION = "prepare"
    CATEGORY = f"{CATEGORY}/dataset"
    OUTPUT_NODE = True  # it writes the dataset folder

    @classmethod
    def IS_CHANGED(cls, photos_folder=None, **settings):
        from headshot.train.job_reuse import fingerprint

        # a linked folder arrives as None here; the upstream node's own IS_CHANGED covers it
        listing = []
        if photos_folder:
            try:
                listing = folder_listing(resolve_folder(photos_folder, "photos_folder"))
            except HeadshotError:  # prepare() says why
                pass
        return fingerprint(photos_folder, listing, settings)

    def prepare(
        self,
        photos_folder: str,
        dataset_name: str,
        trigger: str,
        class_word: str,
        resolution: int,
        face_backend: str,
        tagger: str,
        keep: str = "",
        reference_photo: str = "",
        repeats: int = 0,
    ):
        from PIL import Image

        from headshot.dataset.prepare import CONTACT_SHEET_NAME, prepare_dataset
        from headshot.dataset.prepare_report import prepare_summary
        from headshot.dataset.prepare_settings import PrepareSettings

        source = resolve_folder(photos_folder, "Prepare Dataset photos_folder")
        out = dataset_dir(dataset_name)
        trigger = safe_name(trigger.strip(), "Prepare Dataset trigger")  # both name the kohya image folder
        class_word = safe_name(class_word.strip(), "Prepare Dataset class_word") if class_word.strip() else None
        reference = (
            [user_path(reference_photo, "Prepare Dataset reference_photo", "file")] if reference_photo.strip() else []
        )
        settings = PrepareSettings(
            trigger=trigger,
            class_word=class_word,
            resolution=resolution,
            face_backend=face_backend,
            face_model_dirs=host.folder_dirs("insightface"),
            tagger=tagger,
            tagger_dirs=host.folder_dirs("taggers"),
            repeats=repeats or None,
            keep=set(split_names(keep)),
            reference=reference,
        )
        bar = host.Progress()

        def progress(done: int, total: int, message: str) -> None:
            host.raise_if_interrupted()
            bar(done, total)

        result = prepare_dataset(source, out, settings, analyzer=face_analyzer(face_backend), progress=progress)
        crops = [photo.crop for photo in result.kept]
        crops_batch = pil_to_image_batch(crops) if crops else no_images(resolution, resolution)
        with Image.open(out / CONTACT_SHEET_NAME) as sheet:
            sheet_batch = pil_to_image_batch([sheet.convert("RGB")])
        return (str(out), crops_batch, prepare_summary(result), sheet_batch)
