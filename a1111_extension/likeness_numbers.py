"""The numbers under the tab's gallery: the core's evaluate stage (headshot.evaluate.evaluation) over a batch.

face distance (face_recognition's dlib L2 to the person), CLIP score (when a CLIP model folder is found:
models/clip or models/CLIP, then the Hugging Face cache) and the faceless count, each with its band, as
`headshot evaluate` prints them; evaluation.json and the contact sheet go in the batch's evaluation/ folder
(a subfolder, so Finish on "the last results" does not take the sheet for a picture).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from headshot.errors import HeadshotError

from . import host
from .photos import face_analyzer

FOLDER = "evaluation"
_clip: dict[Path, object] = {}  # a loaded scorer per model folder: the second batch is measured at once


@dataclass
class Numbers:
    text: str  # the summary with bands, for the box under the gallery
    per_picture: dict[str, str] = field(default_factory=dict)  # results.json image name -> its measures


def clip_dirs() -> list[Path]:
    base = host.models_dir()
    return [d for d in (base / "clip", base / "CLIP") if d.is_dir()]


def _clip_scorer(notes: list[str]):
    from headshot.evaluate.clip_model import find_clip_model, load_clip_scorer

    folder, where = find_clip_model(None, clip_dirs())
    if folder is None:
        notes.append(
            f"CLIP score not computed: no CLIP model folder found (searched {where}); put one (config.json, "
            f"*.safetensors, tokenizer files, e.g. clip-vit-base-patch32) in {host.models_dir() / 'clip'}"
        )
        return None
    if folder not in _clip:
        _clip[folder] = load_clip_scorer(folder)  # a transformers folder or an open_clip checkpoint
    return _clip[folder]


def summary_text(report: dict, notes: list[str]) -> str:
    """Each banded number (value, grade, band), then what a reader should know."""
    summary = report["summary"]
    lines = [f"{summary['images']} picture(s) measured, {summary['faces_found']} with a face"]
    for metric, graded in summary["bands"].items():
        value = "n/a" if graded["value"] is None else f"{graded['value']:g}"
        band = f" - {graded['grade']} ({graded['band']})" if graded["grade"] else ""
        lines.append(f"{metric}: {value}{band}")
    if summary.get("arcface_similarity_mean") is not None:
        lines.append(f"arcface_similarity_mean: {summary['arcface_similarity_mean']:g}")
    return "\n".join(lines + [f"note: {n}" for n in [*notes, *report.get("warnings", [])]])


def measure(out: Path, person: Path | None, backend: str = "auto", progress=None) -> Numbers:
    """The batch in `out` (its results.json) measured against `person`: a LoRA with its identity file, or a
    photo. Never raises for what is missing: the box then says what was not measured and why."""
    from headshot.evaluate.evaluation import evaluate_pictures, tile_note, write_evaluation
    from headshot.evaluate.identity_source import recorded_backend
    from headshot.evaluate.picture_inputs import pictures_to_evaluate
    from headshot.evaluate.reference_faces import load_reference
    from headshot.finish.ranking import identity_file_of

    if person is None:
        return Numbers("numbers not computed: choose an identity LoRA or give a reference photo to compare with")
    notes: list[str] = []
    try:
        pictures = pictures_to_evaluate(out, out / FOLDER)
        dlib = face_analyzer("dlib")
        identity = identity_file_of(person) if person.suffix.lower() == ".safetensors" else None
        wants_arcface = identity is not None and identity.is_file() and recorded_backend(identity) == "insightface"
        arcface = face_analyzer("insightface") if wants_arcface or backend == "insightface" else None
        reference = load_reference(person, dlib, arcface)
        evaluation = evaluate_pictures(pictures, reference, dlib, arcface, _clip_scorer(notes), progress=progress)
        write_evaluation(out / FOLDER, evaluation)
    except HeadshotError as exc:
        return Numbers(f"numbers not computed: {exc}")
    report = evaluation.as_json()
    per_picture = {e["image"]: tile_note(e) for e in report["images"]}
    return Numbers(summary_text(report, notes), per_picture)


def measured(work, person: Path | None, backend: str = "auto"):
    """`work(progress)` -> (results, out), then its batch measured against `person`: both in the same thread."""

    def run(progress):
        results, out = work(progress)
        return results, out, measure(out, person, backend, progress)

    return run
