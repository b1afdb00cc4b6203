"""Prepare's outcome in words, the same in every host: each photo kept (with its caption) or rejected
(with its reason), the warnings, then the totals and where the dataset, report and contact sheet are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .output_folder import CONTACT_SHEET_NAME, REPORT_NAME

if TYPE_CHECKING:
    from .prepare import PrepareResult

#: the photo names' column: most camera and phone names fit
NAME_WIDTH = 32


def prepare_summary(result: PrepareResult) -> str:
    lines = []
    for photo in result.photos:
        if photo.status == "kept":
            lines.append(f"kept      {photo.source:<{NAME_WIDTH}} {photo.caption}")
        else:
            lines.append(f"rejected  {photo.source:<{NAME_WIDTH}} {photo.reason}: {photo.message}")
    lines += [f"warning: {warning}" for warning in result.warnings]
    lines += [
        "",
        f"{len(result.kept)} of {len(result.photos)} photos kept as '{result.class_word}'; "
        f"dataset: {result.subset_dir}",
        f"report: {result.out_dir / REPORT_NAME}   contact sheet: {result.out_dir / CONTACT_SHEET_NAME}",
    ]
    return "\n".join(lines)
