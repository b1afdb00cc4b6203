"""Prepare's outcome in words: the text `headshot prepare` prints and Prepare Dataset's report output."""

from __future__ import annotations

from pathlib import Path

from headshot.dataset.prepare import PhotoOutcome, PrepareResult
from headshot.dataset.prepare_report import prepare_summary


def test_each_photo_then_warnings_then_totals_and_where_things_are():
    out = Path("/data/zoe")
    kept = PhotoOutcome("astronaut.png", status="kept", caption="ohwx woman, smiling")
    noise = PhotoOutcome("noise.png")
    noise.reject("no_face", "no face found; use a photo where the face is visible")
    result = PrepareResult(out, [kept, noise], "woman", out / "img" / "40_ohwx woman", ["only 1 photo kept"])
    assert prepare_summary(result).splitlines() == [
        "kept      astronaut.png                    ohwx woman, smiling",
        "rejected  noise.png                        no_face: no face found; use a photo where the face is visible",
        "warning: only 1 photo kept",
        "",
        "1 of 2 photos kept as 'woman'; dataset: /data/zoe/img/40_ohwx woman",
        "report: /data/zoe/report.json   contact sheet: /data/zoe/contact_sheet.jpg",
    ]
