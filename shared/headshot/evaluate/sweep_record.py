"""sweep.json: what each run of a sweep trained, drew and measured, rewritten atomically after each run.

Shape (issue 11): {"runs": [{"settings": {"lr", "rank", "alpha", "steps", "trigger"}, "lora", "job",
"metrics": {"images", "face_distance_mean", "clip_score_mean", "faceless_count", ...}, "final_loss",
"train_seconds", ...}], "baseline": {...}}. Paths in it ("lora", "job", "pictures", "evaluation") are
relative to the folder holding sweep.json (joining them to that folder works for absolute paths too), so
a sweep folder can move. A run that failed is listed with "state": "failed", its error and code.
sweep.json is data: a reader never follows a path in it out of the sweep folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..outputs import atomic_write_json

SWEEP_NAME = "sweep.json"
METRIC_KEYS = ("images", "face_distance_mean", "clip_score_mean", "faceless_count")
OPTIONAL_METRIC_KEYS = ("arcface_similarity_mean", "faces_found", "unreadable")


def metrics_of(summary: dict) -> dict:
    """The run's numbers from an evaluation summary: the four the issue names, the extras, and the bands."""
    metrics = {key: summary.get(key) for key in METRIC_KEYS}
    metrics.update({key: summary[key] for key in OPTIONAL_METRIC_KEYS if key in summary})
    if "bands" in summary:
        metrics["bands"] = summary["bands"]
    return metrics


def read_json(path: Path) -> dict | None:
    """A JSON object we wrote earlier, or None when it is missing or damaged (then the work is redone)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def final_loss(job_dir: Path) -> float | None:
    """The last logged training loss (loss.csv: step,loss,lr), or None when there is none."""
    try:
        lines = (job_dir / "loss.csv").read_text(encoding="utf-8").splitlines()[1:]
    except OSError:
        return None
    for line in reversed(lines):
        parts = line.split(",")
        try:
            return round(float(parts[1]), 6)
        except (IndexError, ValueError):
            continue
    return None


def relative(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


class SweepRecord:
    """sweep.json in `out`: the earlier entries (for train_seconds of reused runs) and the new document."""

    def __init__(self, out: Path, header: dict):
        self.out = Path(out)
        self.path = self.out / SWEEP_NAME
        earlier = read_json(self.path) or {}
        runs = earlier.get("runs")
        runs = runs if isinstance(runs, list) else []
        self.earlier = {r.get("job"): r for r in runs if isinstance(r, dict) and isinstance(r.get("job"), str)}
        self.document: dict = {**header, "runs": [], "baseline": None}

    def earlier_entry(self, job_dir: Path) -> dict:
        return self.earlier.get(relative(job_dir, self.out)) or {}

    def set_run(self, index: int, entry: dict) -> None:
        self.document["runs"][index] = entry
        self.save()

    def set_baseline(self, entry: dict) -> None:
        self.document["baseline"] = entry
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.document)
