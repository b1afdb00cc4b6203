"""The report's plots, drawn with matplotlib's object API (no pyplot: a host's own backend is never touched).

Each function returns a matplotlib Figure, or None when there is nothing to draw; the HTML report
embeds it as a PNG, the PDF report places it as vector graphics.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from ..errors import HeadshotError
from .bands import BANDS
from .report_analysis import GRADE_COLOURS, Metric, number
from .report_sources import RunRecord

PAGE_WIDTH = 7.5  # inches: A4 less its margins


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise HeadshotError(
            "the report's plots need matplotlib, which is not installed; pip install matplotlib", "backend_unavailable"
        ) from None
    return Figure(figsize=(width, height), layout="constrained")


def _smoothed(losses: np.ndarray) -> np.ndarray:
    window = max(1, len(losses) // 20)
    if window == 1:
        return losses
    padded = np.concatenate([np.full(window - 1, losses[0]), losses])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def loss_overlay(runs: list[RunRecord], labels: list[str]) -> Any | None:
    """Every run's smoothed loss on one axes."""
    logged = [(r, label) for r, label in zip(runs, labels) if len(r.loss) > 1]
    if not logged:
        return None
    fig = _figure(PAGE_WIDTH, 3.4)
    ax = fig.add_subplot()
    for run, label in logged:
        steps, losses = np.array(run.loss, dtype=float).T
        ax.plot(steps, _smoothed(losses), label=label, linewidth=1.5)
    ax.set(xlabel="step", ylabel="loss (smoothed)", title="Loss curves, overlaid")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def loss_per_run(runs: list[RunRecord], labels: list[str]) -> Any | None:
    """One small plot per run: the raw loss and its moving mean."""
    logged = [(r, label) for r, label in zip(runs, labels) if len(r.loss) > 1]
    if not logged:
        return None
    columns = min(3, len(logged))
    rows = math.ceil(len(logged) / columns)
    fig = _figure(PAGE_WIDTH, 2.2 * rows + 0.3)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(logged) :]:
        ax.set_visible(False)
    for ax, (run, label) in zip(axes.flat, logged):
        steps, losses = np.array(run.loss, dtype=float).T
        ax.plot(steps, losses, color="#9ec3ea", linewidth=0.8)
        ax.plot(steps, _smoothed(losses), color="#1e5ac8", linewidth=1.5)
        ax.set_title(f"{label}\nlast {number(float(losses[-1]))}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    fig.suptitle("Loss per run (raw and moving mean)", fontsize=9)
    return fig


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def hyperparameter_figure(
    runs: list[RunRecord], setting: str, metrics: list[Metric], baseline: RunRecord | None, alike: list[str]
) -> Any | None:
    """Each metric against one setting: one point per run, the bands shaded, the baseline dashed."""
    points = [r for r in runs if _numeric(r.settings.get(setting))]
    metrics = [m for m in metrics if any(_numeric(r.metrics.get(m.key)) for r in points)]
    if len({r.settings[setting] for r in points}) < 2 or not metrics:
        return None
    fig = _figure(PAGE_WIDTH, 2.6)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    xs = [float(r.settings[setting]) for r in points]
    logarithmic = min(xs) > 0 and max(xs) / min(xs) >= 10
    for ax, metric in zip(axes, metrics):
        pairs = sorted(
            (float(r.settings[setting]), float(r.metrics[metric.key]))
            for r in points
            if _numeric(r.metrics.get(metric.key))
        )
        x, y = zip(*pairs)
        ax.plot(x, y, "o", color="#1e5ac8")
        means = _means_by_x(pairs)
        ax.plot(list(means), list(means.values()), "-", color="#1e5ac8", alpha=0.5)
        recorded = baseline.metrics.get(metric.key) if baseline else None
        base = float(recorded) if recorded is not None and _numeric(recorded) else None
        _shade_bands(ax, metric.key, [*y] + ([base] if base is not None else []))
        if base is not None:
            ax.axhline(base, linestyle="--", color="grey", linewidth=1, label="baseline")
            ax.legend(fontsize=6)
        if logarithmic:
            ax.set_xscale("log")
        ax.set_xlabel(setting, fontsize=8)
        ax.set_title(metric.label, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    named = " = ".join([setting, *alike])  # settings that changed together share one plot
    fig.suptitle(f"Metrics against {named} (line: mean per value)", fontsize=9)
    return fig


def _means_by_x(pairs: list[tuple[float, float]]) -> dict[float, float]:
    grouped: dict[float, list[float]] = {}
    for x, y in pairs:
        grouped.setdefault(x, []).append(y)
    return {x: sum(ys) / len(ys) for x, ys in grouped.items()}


def _shade_bands(ax, metric: str, values) -> None:
    """The brief's bands behind the points, over the range the plot shows."""
    table = BANDS.get(metric)
    if table is None:
        return
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 or abs(high) * 0.1 or 0.1
    low, high = low - pad, high + pad
    edge = -math.inf if table.lower_is_better else math.inf
    for band in table.bands:
        start, end = sorted((edge, band.holds))
        start, end = max(start, low), min(end, high)
        if start < end:
            ax.axhspan(start, end, color=GRADE_COLOURS[band.grade], zorder=0, linewidth=0)
        edge = band.holds
    ax.set_ylim(low, high)


def png_bytes(fig, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
