"""`headshot report`: report.html and report.pdf from a sweep, a training job or one evaluation."""

from __future__ import annotations

from pathlib import Path

from ..outputs import OutputManifest, atomic_save, atomic_write_text, check_writable
from .report_content import FigureBlock, report_blocks
from .report_html import report_html
from .report_pdf import write_report_pdf
from .report_sources import load_report_source

HTML_NAME = "report.html"
PDF_NAME = "report.pdf"
TITLES = {"sweep": "Headshot Studio: sweep report", "job": "Headshot Studio: training report"}


def write_report(source_path: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Read the source, then write report.html and report.pdf into `out_dir`, each atomically; a file of
    the user's with the same name is refused, never overwritten."""
    source = load_report_source(source_path)
    out = check_writable(out_dir, "--out")
    manifest = OutputManifest(out)
    html_path = manifest.claim(out / HTML_NAME)
    pdf_path = manifest.claim(out / PDF_NAME)
    title = TITLES.get(source.kind, "Headshot Studio: evaluation report")
    blocks = report_blocks(source)
    manifest.save()
    try:
        atomic_save(pdf_path, lambda tmp: write_report_pdf(tmp, title, blocks))
        atomic_write_text(html_path, report_html(title, blocks))
    finally:
        for block in blocks:  # figures hold memory until closed; nothing else refers to them
            if isinstance(block, FigureBlock):
                block.figure.clear()
    return html_path, pdf_path
