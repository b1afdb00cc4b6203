"""Rank by Likeness and Evaluate Likeness: the core's identity scoring over an IMAGE batch."""

from __future__ import annotations

import json

from . import host
from .common import CATEGORY, face_analyzer, face_backend_input
from .images import image_batch_to_pils, no_images, pil_to_image_batch
from .paths import RULE, user_path


def identity_inputs() -> dict:
    """The optional inputs that say who the person is (the first one given is used)."""
    return {
        "lora_name": (
            ["none"] + host.file_list("loras"),
            {
                "default": "none",
                "tooltip": "An identity LoRA trained "
                "here: its <name>.identity.json (written beside it) is the person's face.",
            },
        ),
        "reference_images": ("IMAGE", {"tooltip": "Photos of the person (e.g. Load Photos' images)."}),
        "reference_folder": ("STRING", {"default": "", "tooltip": "A folder of photos of the person." + RULE}),
        "identity_file": ("STRING", {"default": "", "tooltip": "Path of an .identity.json file." + RULE}),
    }


def resolve_identity(
    face_backend: str,
    lora_name: str = "none",
    reference_images=None,
    reference_folder: str = "",
    identity_file: str = "",
):
    """The core's identity resolution, with the widgets' paths checked against ComfyUI's folders."""
    from headshot.evaluate.identity_source import IdentitySource, resolve_identity

    source = IdentitySource(
        identity_file=user_path(identity_file, "identity_file", "file") if identity_file.strip() else None,
        lora_file=host.full_path("loras", lora_name) if lora_name and lora_name != "none" else None,
        reference_images=image_batch_to_pils(reference_images) if reference_images is not None else None,
        reference_folder=user_path(reference_folder, "reference_folder", "folder")
        if reference_folder.strip()
        else None,
    )
    return resolve_identity(source, face_backend, face_analyzer)


def _interruptible(done: int, total: int, message: str) -> None:
    host.raise_if_interrupted()


def _batch(pictures, entries, like):
    if not entries:
        return no_images(like.shape[1], like.shape[2])
    return pil_to_image_batch([pictures[e["index"]] for e in entries])


class HeadshotRankByLikeness:
    DESCRIPTION = (
        "Scores each picture's face against the person (the identity saved with the LoRA, or photos of "
        "them) and sorts the batch best first; keeps the top K, and sets pictures without a face aside."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The pictures to rank."}),
                "top_k": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 4096,
                        "tooltip": "Keep the K most alike in 'ranked' (the rest go to 'below_top'); 0 keeps all.",
                    },
                ),
                "face_backend": face_backend_input(),
            },
            "optional": identity_inputs(),
        }

    RETURN_TYPES = ("IMAGE", "STRING", "IMAGE", "IMAGE")
    RETURN_NAMES = ("ranked", "scores", "faceless", "below_top")
    OUTPUT_TOOLTIPS = (
        "Pictures with a face, most alike first (the top K; none: the nodes it feeds are skipped).",
        "Each picture's rank and likeness score (1 identical, 0.5 at the same-person threshold).",
        "Pictures in which no face was found (none: the nodes it feeds are skipped).",
        "Pictures with a face below the top K (none: the nodes it feeds are skipped).",
    )
    FUNCTION = "rank"
    CATEGORY = f"{CATEGORY}/finish"

    def rank(
        self,
        images,
        top_k: int,
        face_backend: str,
        lora_name: str = "none",
        reference_images=None,
        reference_folder: str = "",
        identity_file: str = "",
    ):
        from headshot.finish.ranking import rank_by_likeness

        person = resolve_identity(face_backend, lora_name, reference_images, reference_folder, identity_file)
        pictures = image_batch_to_pils(images)
        ranked = rank_by_likeness(pictures, person.analyzer, person.identity, top_k or None, _interruptible)
        return (
            _batch(pictures, ranked.kept, images),
            ranked.summary(person.source, top_k),
            _batch(pictures, ranked.faceless, images),
            _batch(pictures, ranked.below, images),
        )


class HeadshotEvaluateLikeness:
    DESCRIPTION = (
        "Measures a batch: identity distance of each face to the person, how many pictures have no "
        "face, and the CLIP score of the pictures against a prompt when a CLIP model folder is given."
    )

    @classmethod
    def INPUT_TYPES(cls):
        optional = identity_inputs()
        optional.update(
            {
                "prompt": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Text for the CLIP score (e.g. the positive prompt).",
                    },
                ),
                "clip_model_dir": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "A Hugging Face CLIP model folder (config.json, "
                        "safetensors weights, tokenizer), e.g. clip-vit-large-patch14; empty: the "
                        "CLIP score is not computed." + RULE,
                    },
                ),
            }
        )
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The pictures to measure."}),
                "face_backend": face_backend_input(),
            },
            "optional": optional,
        }

    RETURN_TYPES = ("STRING", "STRING", "FLOAT", "INT")
    RETURN_NAMES = ("report", "report_json", "mean_distance", "faceless_count")
    OUTPUT_TOOLTIPS = (
        "The measurements in words.",
        "The measurements as JSON.",
        "Mean identity distance of the faces (lower is more alike); -1 when not computed.",
        "Pictures in which no face was found.",
    )
    FUNCTION = "evaluate"
    CATEGORY = f"{CATEGORY}/evaluate"

    def evaluate(
        self,
        images,
        face_backend: str,
        lora_name: str = "none",
        reference_images=None,
        reference_folder: str = "",
        identity_file: str = "",
        prompt: str = "",
        clip_model_dir: str = "",
    ):
        from headshot.evaluate.likeness_report import likeness_report, report_text

        person = resolve_identity(face_backend, lora_name, reference_images, reference_folder, identity_file)
        clip_folder = user_path(clip_model_dir, "clip_model_dir") if clip_model_dir.strip() else None
        report = likeness_report(
            image_batch_to_pils(images), person, prompt=prompt, clip_model_dir=clip_folder, progress=_interruptible
        )
        mean = report["mean_distance"]
        return (
            report_text(report),
            json.dumps(report, indent=2),
            float(mean) if mean is not None else -1.0,
            int(report["faceless"]),
        )
