"""`headshot report`: report.html and report.pdf from a sweep, a training job or an evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_report_command(sub) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "report", help="write report.html and report.pdf: settings, data, loss curves, pictures, metrics, analysis"
    )
    p.add_argument(
        "source",
        type=Path,
        metavar="SWEEP_OR_JOB_OR_EVALUATION",
        help="a sweep.json (or its folder), a training job folder, or an evaluation.json (or its folder)",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for report.html and report.pdf")
    p.set_defaults(run=_report)


def _report(args) -> int:
    from ..evaluate.report_sources import load_report_source
    from ..evaluate.report_writer import write_report
    from ..outputs import FolderLock, check_writable

    load_report_source(args.source)  # a wrong source is said before the output folder is made
    check_writable(args.out)
    with FolderLock(args.out, "output folder"):
        html_path, pdf_path = write_report(args.source, args.out)
    print(f"report: {html_path}\n        {pdf_path}")
    return 0
