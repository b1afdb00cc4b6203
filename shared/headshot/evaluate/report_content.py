"""The report as a list of blocks (headings, text, tables, plots, pictures), rendered once as HTML and
once as PDF so both say the same thing in the same order."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .bands import BANDS
from .evaluation import tile_note
from .report_analysis import (
    Table,
    analysis_facts,
    confounded,
    metrics_shown,
    metrics_table,
    number,
    run_label,
    varying_settings,
)
from .report_figures import hyperparameter_figure, loss_overlay, loss_per_run
from .report_methods import STUDY_TEXT, is_method_study, method_facts, method_lines, methods_table
from .report_sources import ReportSource, RunRecord, evaluation_sheet, thumbnail

GRID_SIDE = 256  # pixels of a picture in the grids
SHEET_SIDE = 1400  # pixels of a contact sheet's long side
GRID_COLUMNS = 5
MAX_PICTURES = 10  # per run: the grids stay readable and the files small
LOG_EVENTS = ("status", "resumed", "cancelled", "error", "done")


@dataclass
class Heading:
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class TableBlock:
    table: Table
    caption: str = ""


@dataclass
class FigureBlock:
    figure: Any  # a matplotlib Figure
    caption: str = ""


@dataclass
class PictureBlock:
    image: Image.Image
    caption: str = ""


@dataclass
class PictureGrid:
    columns: list[str]  # what each column is (the picture's name: the same seed and prompt down a column)
    rows: list[tuple[str, list[Image.Image | None], list[str]]] = field(default_factory=list)  # label, pictures, notes


Block = Heading | Paragraph | Bullets | TableBlock | FigureBlock | PictureBlock | PictureGrid

KIND_TEXT = {
    "sweep": "a hyper-parameter sweep: each run trained one LoRA with the builtin engine on the same dataset, "
    "generated the same prompts with the same seeds, and was evaluated; the baseline generated the same "
    "prompts and seeds without a LoRA",
    "job": "one training job and, when it was evaluated, its pictures",
    "evaluation": "one evaluated batch of pictures",
}


def report_blocks(source: ReportSource) -> list[Block]:
    varying = varying_settings(source.runs)
    labels = [run_label(r, varying) for r in source.runs]
    study = is_method_study(source)
    blocks: list[Block] = [
        Paragraph(f"Made from {source.path}: {STUDY_TEXT if study else KIND_TEXT[source.kind]}."),
        *_method(source, varying),
        *_data_processing(source),
        *_training(source, labels),
        *_pictures(source, labels),
        *_metrics(source),
        *(_methods(source) if study else _hyperparameters(source)),
        Heading("Analysis"),
        Bullets((method_facts(source) if study else []) + analysis_facts(source)),
    ]
    if source.notes:
        blocks += [Heading("Not found"), Bullets(source.notes)]
    return blocks


def _method(source: ReportSource, varying: list[str]) -> list[Block]:
    blocks: list[Block] = [
        Heading("Method and settings"),
        Bullets(
            [
                "Face distance: face_recognition's metric, the L2 distance between the 128-d dlib encoding of a "
                "picture's face and each reference photo's, averaged over the reference photos; lower is more alike.",
                "CLIP score: the cosine between CLIP's image and text embeddings of the picture and its prompt "
                "(trigger word removed); higher follows the prompt better.",
                "Faceless: no face found, or a face at face distance 0.6 or more (face_recognition's tolerance: "
                "someone else).",
                "Bands (the course brief): "
                + "; ".join(
                    f"{key}: " + ", ".join(f"{b.grade} {b.text}" for b in table.bands) for key, table in BANDS.items()
                ),
            ]
        ),
    ]
    if is_method_study(source):
        blocks += [Paragraph("Methods compared:"), Bullets(method_lines(source))]
    runs = source.runs
    if varying:
        header = ["run", *varying]
        rows = [[r.name, *(number(r.settings.get(k)) for k in varying)] for r in runs]
        blocks.append(TableBlock(Table(header, rows, [[None] * len(header) for _ in rows]), "Settings compared"))
    common = {k: v for k, v in (runs[0].settings.items() if runs else []) if k not in varying}
    recorded = [(r.job or {}).get("settings") or {} for r in runs if r.job]
    for key, value in (recorded[0] if recorded else {}).items():  # the jobs' full settings, where all agree
        if key in varying or value in (None, [], "") or key.endswith(("_dir", "_dirs", "_repo", "_model", "_python")):
            continue
        if all(other.get(key) == value for other in recorded):
            common.setdefault(key, value)
    if common:
        rows = [[k, number(v)] for k, v in common.items()]
        blocks.append(TableBlock(Table(["setting", "value"], rows, [[None, None] for _ in rows]), "Settings shared"))
    evaluation = next((r.evaluation for r in runs if r.evaluation), None)
    if evaluation:
        reference = evaluation.get("reference") or {}
        blocks.append(
            Paragraph(
                f"Measured against {reference.get('photos', '?')} reference photo(s) of the person "
                f"({reference.get('kind', 'unknown source')}); faces by {evaluation.get('face_backend', 'dlib')}; "
                f"CLIP model: {evaluation.get('clip_model') or 'none (CLIP score not computed)'}."
            )
        )
    return blocks


def _data_processing(source: ReportSource) -> list[Block]:
    dataset = source.dataset
    if dataset is None:
        return []
    report = dataset.report
    photos = [p for p in report.get("photos") or [] if isinstance(p, dict)]
    kept = [p for p in photos if p.get("status") == "kept"]
    rejected = [p for p in photos if p.get("status") != "kept"]
    reasons = Counter(str(p.get("reason")) for p in rejected)
    blocks: list[Block] = [
        Heading("Data processing"),
        Paragraph(
            f"Dataset {dataset.folder}: {len(photos)} photo(s) screened, {len(kept)} kept, {len(rejected)} rejected"
            + (" (" + ", ".join(f"{n} {r}" for r, n in reasons.items()) + ")" if reasons else "")
            + f". Trigger '{report.get('trigger')}', class '{report.get('class')}', "
            f"resolution {report.get('resolution')}."
        ),
    ]
    if dataset.contact_sheet is not None:
        sheet = thumbnail(dataset.contact_sheet, SHEET_SIDE)
        if sheet is not None:
            blocks.append(PictureBlock(sheet, "Contact sheet written by prepare: each photo, kept or rejected"))
    if kept:
        rows = [[str(p.get("source")), str(p.get("caption", ""))] for p in kept]
        blocks.append(TableBlock(Table(["photo", "caption"], rows, [[None, None] for _ in rows]), "Captions"))
    if rejected:
        rows = [[str(p.get("source")), str(p.get("reason")), str(p.get("message", ""))] for p in rejected]
        blocks.append(
            TableBlock(Table(["photo", "reason", "why"], rows, [[None] * 3 for _ in rows]), "Rejected photos")
        )
    for warning in report.get("warnings") or []:
        blocks.append(Paragraph(f"Warning from prepare: {warning}"))
    return blocks


def _training(source: ReportSource, labels: list[str]) -> list[Block]:
    runs = [r for r in source.runs if r.job is not None]
    if not runs:
        return []
    rows, log = [], []
    for run in runs:
        job = run.job or {}
        rows.append(
            [
                run.name,
                str(job.get("state")),
                number(job.get("steps_done")),
                number(run.final_loss),
                number(run.train_seconds),
                str(len(run.events)),
            ]
        )
        for event in [e for e in run.events if e.get("type") in LOG_EVENTS][-6:]:
            text = event.get("message") or ", ".join(f"{k} {v}" for k, v in event.items() if k not in ("type", "time"))
            log.append(f"{run.name} · {event.get('type')}: {text}")
    header = ["run", "state", "steps", "final loss", "training (s)", "events"]
    blocks: list[Block] = [
        Heading("Training"),
        TableBlock(Table(header, rows, [[None] * len(header) for _ in rows]), "Training jobs (job.json, loss.csv)"),
    ]
    if log:
        blocks += [Paragraph("The training log (events.jsonl), last lines of each run:"), Bullets(log)]
    job_labels = [label for run, label in zip(source.runs, labels) if run.job is not None]
    for figure, caption in (
        (loss_per_run(runs, job_labels), "Loss per run"),
        (loss_overlay(runs, job_labels), "Loss curves overlaid"),
    ):
        if figure is not None:
            blocks.append(FigureBlock(figure, caption))
    return blocks


def _pictures(source: ReportSource, labels: list[str]) -> list[Block]:
    rows = ([(source.baseline, "baseline (no LoRA)")] if source.baseline else []) + list(zip(source.runs, labels))
    rows = [(run, label) for run, label in rows if run.evaluation]
    if not rows:
        return []
    what = "method" if is_method_study(source) else "run"
    blocks: list[Block] = [Heading("Pictures" + (f": baseline vs each {what}, same seeds" if source.baseline else ""))]
    names = _column_names([run for run, _ in rows])
    if names:
        blocks.append(
            Paragraph("Each column is one prompt and seed; under each picture its numbers from the evaluation.")
        )
        for start in range(0, len(names), GRID_COLUMNS):
            chunk = names[start : start + GRID_COLUMNS]
            grid = PictureGrid([c if isinstance(c, str) else f"picture {c + 1}" for c in chunk])
            for run, label in rows:
                pictures, notes = zip(*(_cell(run, column) for column in chunk))
                grid.rows.append((label, list(pictures), list(notes)))
            blocks.append(grid)
    else:
        for run, label in rows:
            sheet = evaluation_sheet(run)
            image = thumbnail(sheet, SHEET_SIDE) if sheet else None
            if image is not None:
                blocks.append(PictureBlock(image, f"{label}: the evaluation's contact sheet (pictures not found)"))
    return blocks


def _column_names(runs: list[RunRecord]) -> list[str | int]:
    """Picture names shared between runs line up by name (same prompt and seed); else by position."""
    lists = [
        [e["image"] for e in run.evaluation["images"] if isinstance(e, dict) and e.get("image") in run.pictures]
        for run in runs
        if run.evaluation
    ]
    lists = [names[:MAX_PICTURES] for names in lists]
    shared = len(lists) < 2 or any(set(a) & set(b) for i, a in enumerate(lists) for b in lists[i + 1 :])
    if shared:
        ordered: list[str | int] = []
        for names in lists:
            ordered += [n for n in names if n not in ordered]
        return ordered[:MAX_PICTURES]
    return list(range(max(len(names) for names in lists)))


def _cell(run: RunRecord, column: str | int) -> tuple[Image.Image | None, str]:
    entries = (
        [e for e in run.evaluation["images"] if isinstance(e, dict) and e.get("image") in run.pictures]
        if run.evaluation
        else []
    )
    if isinstance(column, int):
        entry = entries[column] if column < len(entries) else None
    else:
        entry = next((e for e in entries if e.get("image") == column), None)
    if entry is None:
        return None, "—"
    return thumbnail(run.pictures[entry["image"]], GRID_SIDE), tile_note(entry)


def _metrics(source: ReportSource) -> list[Block]:
    if not any(r.metrics for r in ([source.baseline] if source.baseline else []) + source.runs):
        return []
    return [
        Heading("Metrics"),
        TableBlock(metrics_table(source), "Each value with its band (grade, range) from the course brief"),
    ]


def _methods(source: ReportSource) -> list[Block]:
    return [
        Heading("Methods side by side"),
        TableBlock(methods_table(source), "Each method's numbers with its band and its change from the baseline"),
    ]


def _hyperparameters(source: ReportSource) -> list[Block]:
    metrics = [m for m in metrics_shown(source.runs) if m.lower_is_better is not None]
    together = confounded(source.runs, varying_settings(source.runs))
    shadowed = {s for others in together.values() for s in others}
    figures = [
        hyperparameter_figure(source.runs, s, metrics, source.baseline, together.get(s, []))
        for s in varying_settings(source.runs)
        if s not in shadowed
    ]
    shown = [f for f in figures if f is not None]
    if not shown:
        return []
    return [Heading("Hyper-parameters"), *(FigureBlock(f, "") for f in shown)]
