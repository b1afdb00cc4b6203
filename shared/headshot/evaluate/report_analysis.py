"""The report's numbers: the metrics table with each value's band, and the analysis as measured facts.

The analysis says only what the numbers show (which run is best per metric, how a metric moved with
a setting across the runs, where the best runs differ); it never guesses why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .bands import BANDS
from .report_sources import ReportSource, RunRecord


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    lower_is_better: bool | None  # None: a count that is neither better nor worse
    best: str = ""  # how the analysis names the best value


METRICS = (
    Metric("face_distance_mean", "Face distance (mean)", True, "lowest face distance"),
    Metric("clip_score_mean", "CLIP score (mean)", False, "highest CLIP score"),
    Metric("faceless_count", "Faceless pictures", True, "fewest faceless pictures"),
    Metric("arcface_similarity_mean", "ArcFace similarity (mean)", False, "highest ArcFace similarity"),
    Metric("images", "Pictures", None),
)


def number(value) -> str:
    """A value as the report prints it."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            return f"{value:.0e}"
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def metrics_shown(runs: list[RunRecord]) -> list[Metric]:
    """The metrics at least one run has a value for (ArcFace only when it was measured)."""
    return [m for m in METRICS if any(r.metrics.get(m.key) is not None for r in runs)]


def varying_settings(runs: list[RunRecord]) -> list[str]:
    """Settings whose values differ between the runs: the ones the sweep compares."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.settings if k not in keys]
    return [k for k in keys if len({repr(r.settings.get(k)) for r in runs}) > 1]


def run_label(run: RunRecord, varying: list[str]) -> str:
    if run.method:  # a method study: the method says what the run is
        return f"{run.name} ({run.method})"
    shown = ", ".join(f"{k}={number(run.settings.get(k))}" for k in varying)
    return f"{run.name} ({shown})" if shown else run.name


def band_of(metric: str, value) -> tuple[str | None, str | None]:
    """(grade, band text) of `value` in the brief's bands, or (None, None) for an unbanded metric."""
    table = BANDS.get(metric)
    band = table.band_of(value) if table is not None and isinstance(value, (int, float)) else None
    return (band.grade, band.text) if band else (None, None)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    grades: list[list[str | None]]  # per cell: excellent/good/fair/poor, or None (no colour)


def metrics_table(source: ReportSource) -> Table:
    """One row per run (baseline first), each value with its band."""
    runs = ([source.baseline] if source.baseline else []) + source.runs
    varying = varying_settings(source.runs)
    metrics = metrics_shown(runs)
    study = any(r.method for r in source.runs)  # a method study: the methods side by side
    header = ["run", *(["method"] if study else []), *varying, *(m.label for m in metrics)]
    header += ["final loss", "training (s)"]
    rows, grades = [], []
    for run in runs:
        row = [run.name, *([run.method or "none"] if study else []), *(number(run.settings.get(k)) for k in varying)]
        graded: list[str | None] = [None] * len(row)
        for m in metrics:
            value = run.metrics.get(m.key)
            grade, band = band_of(m.key, value)
            row.append(number(value) + (f" ({grade}, {band})" if grade else ""))
            graded.append(grade)
        row += [number(run.final_loss), number(run.train_seconds)]
        graded += [None, None]
        rows.append(row)
        grades.append(graded)
    return Table(header, rows, grades)


def _best(runs: list[RunRecord], metric: Metric) -> RunRecord | None:
    valued = [r for r in runs if isinstance(r.metrics.get(metric.key), (int, float))]
    if not valued or metric.lower_is_better is None:
        return None
    pick = min if metric.lower_is_better else max
    return pick(valued, key=lambda r: r.metrics[metric.key])


def analysis_facts(source: ReportSource) -> list[str]:
    """Sentences that state measured facts only."""
    runs, varying = source.runs, varying_settings(source.runs)
    facts: list[str] = []
    metrics = [m for m in metrics_shown(runs) if m.lower_is_better is not None]
    best_of = {}
    for metric in metrics:
        best = _best(runs, metric)
        if best is None:
            continue
        best_of[metric.key] = best
        value = best.metrics[metric.key]
        grade, band = band_of(metric.key, value)
        text = f"The {metric.best}: {run_label(best, varying)}, {number(value)}"
        text += f" (band {grade}, {band})." if grade else "."
        base = source.baseline.metrics.get(metric.key) if source.baseline else None
        if isinstance(base, (int, float)):
            text += f" The baseline without a LoRA measured {number(base)}."
        facts.append(text)
    distance, clip = best_of.get("face_distance_mean"), best_of.get("clip_score_mean")
    if distance is not None and clip is not None and distance is not clip:
        facts.append(
            f"The run closest to the person ({distance.name}: {_pair(distance)}) is not the one that "
            f"follows the prompt best ({clip.name}: {_pair(clip)})."
        )
    elif distance is not None and distance is clip and len(runs) > 1:
        facts.append(f"{distance.name} has both the lowest face distance and the highest CLIP score.")
    if any(r.method for r in runs):  # a method study: the methods' facts come from report_methods
        return facts
    for setting, together in confounded(runs, varying).items():
        facts.append(
            f"{' and '.join([setting, *together])} changed together in every run, so their effects "
            "cannot be told apart here."
        )
    shadowed = {s for together in confounded(runs, varying).values() for s in together}
    for setting in varying:
        if setting not in shadowed:
            facts += _setting_trends(runs, setting, metrics)
    if len(runs) > 1 and "lr" not in varying:
        facts.append("The learning rate was the same in every run; the brief asks for at least three settings of it.")
    elif "lr" in varying:
        count = len({repr(r.settings.get("lr")) for r in runs})
        if count < 3:
            facts.append(f"The learning rate took {count} values; the brief asks for at least three.")
    if len(runs) == 1 and not facts:
        facts.append("One run only: there is nothing to compare it with.")
    return facts


def _pair(run: RunRecord) -> str:
    distance, clip = run.metrics.get("face_distance_mean"), run.metrics.get("clip_score_mean")
    return f"face distance {number(distance)}, CLIP {number(clip)}"


def confounded(runs: list[RunRecord], varying: list[str]) -> dict[str, list[str]]:
    """Settings that split the runs into the same groups as an earlier one (rank and alpha set alike)."""

    def grouping(setting: str) -> frozenset:
        groups: dict[str, set[int]] = {}
        for i, run in enumerate(runs):
            groups.setdefault(repr(run.settings.get(setting)), set()).add(i)
        return frozenset(frozenset(g) for g in groups.values())

    found: dict[str, list[str]] = {}
    for i, setting in enumerate(varying):
        if any(setting in together for together in found.values()):
            continue
        same = [other for other in varying[i + 1 :] if grouping(other) == grouping(setting)]
        if same:
            found[setting] = same
    return found


def _setting_trends(runs: list[RunRecord], setting: str, metrics: list[Metric]) -> list[str]:
    """For a numeric setting: each metric's mean at each of its values, and whether it moved one way."""
    values = sorted({r.settings[setting] for r in runs if isinstance(r.settings.get(setting), (int, float))})
    if len(values) < 2:
        return []
    facts = []
    for metric in metrics:
        means: list[float] = []
        for value in values:
            measured = [
                r.metrics[metric.key]
                for r in runs
                if r.settings.get(setting) == value and isinstance(r.metrics.get(metric.key), (int, float))
            ]
            if not measured:
                break
            means.append(sum(measured) / len(measured))
        if len(means) < len(values):
            continue
        steps = [b - a for a, b in zip(means, means[1:])]
        direction = "rose" if all(s > 0 for s in steps) else "fell" if all(s < 0 for s in steps) else None
        listed = ", ".join(f"{number(v)}: {number(m)}" for v, m in zip(values, means))
        trend = f"{direction} with every step up in {setting}" if direction else f"did not move one way with {setting}"
        facts.append(f"{metric.label} {trend} (mean per {setting}, {listed}).")
    return facts


#: the colour of each band in tables and plots (light, so text on it stays readable)
GRADE_COLOURS = {"excellent": "#c8e6c9", "good": "#e6f4c8", "fair": "#fff3c4", "poor": "#f8d0d0"}
