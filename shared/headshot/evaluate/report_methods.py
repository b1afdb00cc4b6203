"""A method study in the report (`headshot sweep --methods`): the methods side by side against the baseline,
and what the numbers show per method. Measured facts only, as in report_analysis.
"""

from __future__ import annotations

from .report_analysis import Metric, Table, band_of, metrics_shown, number
from .report_sources import ReportSource, RunRecord

#: what each method is, for the report's method section (sweep/methods.py runs them)
METHOD_TEXT = {
    "adapter": "IP-Adapter FaceID with the one reference photo, no training",
    "single-photo-lora": "a LoRA trained on the varied dataset made from the one reference photo",
    "lora": "a LoRA trained on the full prepared dataset",
    "lora+adapter": "the full-set LoRA with the FaceID adapter on top (the same LoRA, no second training)",
}
STUDY_TEXT = (
    "a method study: each method drew the same prompts with the same seeds and was evaluated against the "
    "dataset's photos; the baseline drew them with neither a LoRA nor the adapter"
)


def is_method_study(source: ReportSource) -> bool:
    return any(run.method for run in source.runs)


def method_of(run: RunRecord) -> str:
    return run.method or "baseline"


def method_lines(source: ReportSource) -> list[str]:
    """One line per method compared: what it is, and the adapter file and weight where it uses one."""
    lines = []
    for run in source.runs:
        if not run.method:
            continue
        text = f"{run.name}: {run.method}, {METHOD_TEXT.get(run.method, 'a method this version does not know')}"
        if run.adapter:
            text += f" ({run.adapter} at weight {number(run.adapter_weight)})"
        lines.append(text + ".")
    return lines


def methods_table(source: ReportSource) -> Table:
    """One row per method (baseline first): each metric with its band and its change from the baseline."""
    rows_of = ([source.baseline] if source.baseline else []) + source.runs
    metrics = metrics_shown(rows_of)
    header = ["method", *(m.label for m in metrics), "training (s)"]
    rows: list[list[str]] = []
    grades: list[list[str | None]] = []
    base = source.baseline.metrics if source.baseline else {}
    for run in rows_of:
        row: list[str] = [method_of(run)]
        graded: list[str | None] = [None]
        for m in metrics:
            value = run.metrics.get(m.key)
            grade, _ = band_of(m.key, value)
            text = number(value) + (f" ({grade})" if grade else "")
            if run is not source.baseline and _both_numbers(value, base.get(m.key)):
                text += f", {_signed(value - base[m.key])} vs baseline"
            row.append(text)
            graded.append(grade)
        trains = run.method in ("lora", "single-photo-lora", "lora+adapter")
        row.append(number(run.train_seconds) if trains else "none")
        graded.append(None)
        rows.append(row)
        grades.append(graded)
    return Table(header, rows, grades)


def method_facts(source: ReportSource) -> list[str]:
    """Per method: its numbers and bands, how far each moved from the baseline; then the methods ranked per metric."""
    runs = [r for r in source.runs if r.method]
    metrics = [m for m in metrics_shown(runs) if m.lower_is_better is not None]
    base = source.baseline.metrics if source.baseline else {}
    facts = []
    for run in runs:
        if not run.metrics:
            facts.append(f"{run.method} ({run.name}): no measurements (the run did not finish).")
            continue
        parts = []
        for m in metrics:
            value = run.metrics.get(m.key)
            if not isinstance(value, (int, float)):
                continue
            grade, band = band_of(m.key, value)
            part = f"{m.label.lower()} {number(value)}" + (f" (band {grade}, {band})" if grade else "")
            if _both_numbers(value, base.get(m.key)):
                part += f", {_signed(value - base[m.key])} from the baseline's {number(base[m.key])}"
            parts.append(part)
        facts.append(f"{run.method} ({run.name}): " + "; ".join(parts) + ".")
    for m in metrics:
        ranked = _ranked(runs, m)
        if len(ranked) > 1:
            order = ", ".join(f"{r.method} {number(r.metrics[m.key])}" for r in ranked)
            facts.append(f"{m.label} by method, best first: {order}.")
    trained = [r for r in runs if r.method != "adapter" and isinstance(r.train_seconds, (int, float))]
    if trained and any(r.method == "adapter" for r in runs):
        times = ", ".join(f"{r.method} {number(r.train_seconds)} s" for r in trained)
        facts.append(f"Training time: the adapter needs none; {times}.")
    return facts


def _ranked(runs: list[RunRecord], metric: Metric) -> list[RunRecord]:
    """The runs with a value of `metric`, best first."""
    valued = [r for r in runs if isinstance(r.metrics.get(metric.key), (int, float))]
    return sorted(valued, key=lambda r: r.metrics[metric.key], reverse=not metric.lower_is_better)


def _both_numbers(a, b) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))


def _signed(delta: float) -> str:
    return ("+" if delta >= 0 else "-") + number(abs(delta))
