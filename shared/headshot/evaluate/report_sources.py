"""What a report is made from: a sweep.json, a training job folder, or one evaluation.json, read as data.

Every file is read as JSON or CSV (never unpickled) and nothing recorded in it is run. A piece that is
missing (a job folder moved, a dataset deleted) becomes a note in the report, not a failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..dataset.output_folder import CONTACT_SHEET_NAME, REPORT_NAME
from ..errors import HeadshotError
from ..photos import PhotoRejected, read_photo
from ..train.job import JobFolder
from .evaluation import EVALUATION_NAME, SHEET_NAME

SWEEP_NAME = "sweep.json"
METRIC_KEYS = ("images", "face_distance_mean", "clip_score_mean", "faceless_count", "arcface_similarity_mean")


@dataclass
class RunRecord:
    """One trained LoRA (or the baseline) with everything measured about it."""

    name: str
    settings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    lora: str | None = None
    job_dir: Path | None = None
    job: dict | None = None  # job.json
    events: list[dict] = field(default_factory=list)
    loss: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) from loss.csv
    final_loss: float | None = None
    train_seconds: float | None = None
    evaluation: dict | None = None
    evaluation_path: Path | None = None
    pictures: dict[str, Path] = field(default_factory=dict)  # picture name -> file found on disk
    method: str | None = None  # in a method study: adapter, single-photo-lora, lora, lora+adapter
    adapter: str | None = None  # the FaceID file the method drew with, and its weight
    adapter_weight: float | None = None


@dataclass
class DatasetRecord:
    folder: Path
    report: dict  # the dataset's report.json, written by prepare
    contact_sheet: Path | None


@dataclass
class ReportSource:
    kind: str  # "sweep" | "job" | "evaluation"
    path: Path
    runs: list[RunRecord]
    baseline: RunRecord | None = None
    dataset: DatasetRecord | None = None
    notes: list[str] = field(default_factory=list)  # what could not be found, said in the report


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HeadshotError(
            f"{path} does not exist; give a sweep.json, a job folder or an evaluation.json", "not_found"
        ) from None
    except (OSError, ValueError) as exc:
        raise HeadshotError(
            f"{path} cannot be read as {what} ({exc}); run the stage that wrote it again", "unreadable"
        ) from None


def _resolve(value: Any, base: Path) -> Path | None:
    """A path recorded in a file: relative ones are taken from the file's folder."""
    if not isinstance(value, str) or not value.strip():
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def evaluation_json_of(entry: dict, base: Path) -> Path | None:
    """Where a sweep run's (or the baseline's) evaluation.json is: its own "evaluation" path when the
    entry names one (a file, or a folder holding evaluation.json), else <job>/evaluation/evaluation.json."""
    named = _resolve(entry.get("evaluation"), base)
    if named is not None:
        return named / EVALUATION_NAME if named.is_dir() else named
    job = _resolve(entry.get("job"), base)
    return job / "evaluation" / EVALUATION_NAME if job is not None else None


def load_report_source(path: str | Path) -> ReportSource:
    """A sweep.json (or a folder holding one), a training job folder, or an evaluation.json (or its folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / SWEEP_NAME).is_file():
            return _load_sweep(path / SWEEP_NAME)
        if (path / "job.json").is_file():
            return _load_job(path)
        if (path / EVALUATION_NAME).is_file():
            return _load_evaluation(path / EVALUATION_NAME)
        raise HeadshotError(
            f"{path} holds no {SWEEP_NAME}, job.json or {EVALUATION_NAME}; give the folder `headshot sweep`, "
            "`headshot train` or `headshot evaluate` wrote",
            "not_found",
        )
    data = _read_json(path, "JSON")
    if isinstance(data, dict) and isinstance(data.get("runs"), list):
        return _load_sweep(path, data)
    if isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("summary"), dict):
        return _load_evaluation(path, data)
    if path.name == "job.json":
        return _load_job(path.parent)
    raise HeadshotError(
        f'{path} is neither a sweep.json (no "runs") nor an evaluation.json (no "images" and "summary"); '
        "give the file `headshot sweep` or `headshot evaluate` wrote",
        "bad_option",
    )


def _load_sweep(path: Path, data: dict | None = None) -> ReportSource:
    data = data if data is not None else _read_json(path, "a sweep.json")
    base = path.parent
    source = ReportSource("sweep", path, [])
    for i, entry in enumerate(data.get("runs") or [], 1):
        if isinstance(entry, dict):
            source.runs.append(_run_from_entry(f"run {i}", entry, base, source.notes))
    if isinstance(data.get("baseline"), dict):
        source.baseline = _run_from_entry("baseline", data["baseline"], base, source.notes)
    dataset_dir = _resolve(data.get("dataset"), base)
    source.dataset = _find_dataset(dataset_dir, source.runs, source.notes)
    return source


def _load_job(folder: Path) -> ReportSource:
    source = ReportSource("job", folder / "job.json", [])
    run = RunRecord(folder.name)
    _fill_from_job(run, folder, source.notes)
    run.settings = _plain_settings(run.job)
    _fill_evaluation(run, folder / "evaluation" / EVALUATION_NAME, None, source.notes)
    source.runs.append(run)
    source.dataset = _find_dataset(None, source.runs, source.notes)
    return source


def _load_evaluation(path: Path, data: dict | None = None) -> ReportSource:
    source = ReportSource("evaluation", path, [])
    run = RunRecord(path.parent.name or "pictures")
    _fill_evaluation(run, path, None, source.notes, data)
    source.runs.append(run)
    return source


def _run_from_entry(name: str, entry: dict, base: Path, notes: list[str]) -> RunRecord:
    run = RunRecord(name, settings=dict(entry.get("settings") or {}), lora=entry.get("lora"))
    if isinstance(entry.get("method"), str):
        run.method = entry["method"]
        run.adapter = entry["adapter"] if isinstance(entry.get("adapter"), str) else None
        weight = entry.get("adapter_weight")
        run.adapter_weight = float(weight) if isinstance(weight, (int, float)) else None
    job_dir = _resolve(entry.get("job"), base)
    if job_dir is not None:
        _fill_from_job(run, job_dir, notes)
    run.metrics = {k: entry["metrics"][k] for k in METRIC_KEYS if k in (entry.get("metrics") or {})}
    for key in ("final_loss", "train_seconds"):
        if isinstance(entry.get(key), (int, float)):
            setattr(run, key, float(entry[key]))
    evaluation = evaluation_json_of(entry, base)
    if evaluation is not None:
        _fill_evaluation(run, evaluation, _resolve(entry.get("images"), base), notes)
    return run


def _fill_from_job(run: RunRecord, folder: Path, notes: list[str]) -> None:
    job = JobFolder(folder)
    if not job.exists():
        notes.append(f"{run.name}: no training job at {folder} (moved or deleted): no loss curve or log")
        return
    try:
        run.job = job.read()
        run.events, _ = job.events()
    except (HeadshotError, ValueError) as exc:
        notes.append(f"{run.name}: the job record in {folder} cannot be read ({exc})")
        return
    run.job_dir = folder
    run.loss = read_loss_log(folder / "loss.csv")
    if run.loss:
        run.final_loss = run.loss[-1][1]
    times = [e["time"] for e in run.events if isinstance(e.get("time"), (int, float))]
    if len(times) > 1:
        run.train_seconds = round(times[-1] - times[0], 1)
    lora = job.lora_path(run.job)
    if run.lora is None and lora is not None:
        run.lora = str(lora)


def read_loss_log(csv_path: Path) -> list[tuple[int, float]]:
    """(step, loss) rows of a job's loss.csv; rows that do not parse are skipped."""
    try:
        lines = csv_path.read_text(encoding="utf-8").splitlines()[1:]
    except OSError:
        return []
    rows = []
    for line in lines:
        parts = line.split(",")
        try:
            rows.append((int(parts[0]), float(parts[1])))
        except (ValueError, IndexError):
            continue
    return rows


def _plain_settings(record: dict | None) -> dict:
    """A job's settings that describe training (paths and unset values left out)."""
    settings = (record or {}).get("settings") or {}
    skip = {"dataset_dir", "base_model", "out_dir", "face_model_dirs", "tokenizer_dirs", "sd_scripts_repo"}
    return {k: v for k, v in settings.items() if k not in skip and v not in (None, [], "")}


def _fill_evaluation(
    run: RunRecord, path: Path, images: Path | None, notes: list[str], data: dict | None = None
) -> None:
    if data is None:
        if not path.is_file():
            notes.append(f"{run.name}: no evaluation at {path}: its pictures are not shown")
            return
        try:
            data = _read_json(path, "an evaluation.json")
        except HeadshotError as exc:
            notes.append(f"{run.name}: {exc}")
            return
    if not isinstance(data, dict):
        return
    run.evaluation, run.evaluation_path = data, path
    summary = data.get("summary") or {}
    for key in METRIC_KEYS:
        if key not in run.metrics and key in summary:
            run.metrics[key] = summary[key]
    run.pictures = find_pictures(data, path, images)


def find_pictures(evaluation: dict, evaluation_path: Path, images: Path | None) -> dict[str, Path]:
    """Each measured picture's file: names are relative to the pictures folder (or results.json) that was
    evaluated; that folder is the run's "images" when the sweep names it, else beside evaluation.json."""
    bases = [
        images,
        _resolve(evaluation.get("images_dir"), evaluation_path.parent),
        evaluation_path.parent,
        evaluation_path.parent.parent,
    ]
    folders = [b.parent if b.suffix.lower() == ".json" else b for b in bases if b is not None]
    found = {}
    for item in evaluation.get("images") or []:
        name = item.get("image") if isinstance(item, dict) else None
        if not isinstance(name, str) or Path(name).is_absolute() or ".." in Path(name).parts:
            continue
        for folder in folders:
            if (folder / name).is_file():
                found[name] = folder / name
                break
    return found


def _find_dataset(dataset_dir: Path | None, runs: list[RunRecord], notes: list[str]) -> DatasetRecord | None:
    """The prepared dataset: the sweep's DATASET, else the first job's dataset folder."""
    candidates = [dataset_dir] + [
        _resolve(((run.job or {}).get("settings") or {}).get("dataset_dir"), run.job_dir)
        for run in runs
        if run.job_dir is not None
    ]
    found = [folder for folder in candidates if folder is not None]
    for folder in found:
        if (folder / REPORT_NAME).is_file():
            try:
                report = _read_json(folder / REPORT_NAME, "a dataset report.json")
            except HeadshotError as exc:
                notes.append(str(exc))
                continue
            sheet = folder / CONTACT_SHEET_NAME
            return DatasetRecord(folder, report if isinstance(report, dict) else {}, sheet if sheet.is_file() else None)
    if found:
        notes.append(f"the dataset's {REPORT_NAME} was not found in {found[0]}: data processing is not shown")
    return None


def thumbnail(path: Path, side: int) -> Image.Image | None:
    """A picture read safely (upright, RGB) and shrunk to at most `side` pixels; None when unreadable."""
    try:
        image = read_photo(path).image.convert("RGB")
    except (PhotoRejected, HeadshotError, OSError):
        return None
    image.thumbnail((side, side))
    return image


def evaluation_sheet(run: RunRecord) -> Path | None:
    """The contact sheet evaluate wrote beside the run's evaluation.json."""
    if run.evaluation_path is None:
        return None
    sheet = run.evaluation_path.parent / SHEET_NAME
    return sheet if sheet.is_file() else None
