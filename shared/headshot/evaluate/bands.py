"""The grading bands of the course brief this product grew from, one table for every report.

Each metric's bands run from best to worst; a value falls in the first band whose bound it meets.
Face distance is face_recognition's dlib L2 scale (lower is better), the CLIP score a raw cosine
(higher is better), the faceless count a number of pictures out of one run (lower is better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    grade: str
    text: str  # the band as the brief writes it
    holds: float  # the band's open end: the value must be below it (lower-better) or at least it (higher-better)


@dataclass(frozen=True)
class MetricBands:
    lower_is_better: bool
    bands: tuple[Band, ...]

    def band_of(self, value: float | None) -> Band | None:
        if value is None or not math.isfinite(value):
            return None
        for band in self.bands:
            if (value < band.holds) if self.lower_is_better else (value >= band.holds):
                return band
        return self.bands[-1]


BANDS: dict[str, MetricBands] = {
    "face_distance_mean": MetricBands(
        True,
        (
            Band("excellent", "< 0.8", 0.8),
            Band("good", "0.8–1.0", 1.0),
            Band("fair", "1.0–1.2", 1.2),
            Band("poor", "≥ 1.2", math.inf),
        ),
    ),
    "clip_score_mean": MetricBands(
        False,
        (
            Band("excellent", "≥ 0.30", 0.30),
            Band("good", "0.25–0.30", 0.25),
            Band("fair", "0.20–0.25", 0.20),
            Band("poor", "< 0.20", -math.inf),
        ),
    ),
    # counts: "≤ 2" is below 3
    "faceless_count": MetricBands(
        True,
        (
            Band("excellent", "≤ 2", 3),
            Band("good", "3–4", 5),
            Band("fair", "5–6", 7),
            Band("poor", "≥ 7", math.inf),
        ),
    ),
}


def summary_bands(summary: dict) -> dict:
    """{metric: {"value", "grade", "band"}} for each banded metric of `summary` (grade None: no value)."""
    graded = {}
    for metric, table in BANDS.items():
        value = summary.get(metric)
        band = table.band_of(value)
        graded[metric] = {"value": value, "grade": band.grade if band else None, "band": band.text if band else None}
    return graded
