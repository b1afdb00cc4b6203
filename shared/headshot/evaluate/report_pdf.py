"""report.pdf: the same blocks as the HTML report, laid out on A4 pages with matplotlib's PDF backend.

A small flow layout: text wraps to the page width, tables wrap their cells and repeat their header on
a new page, pictures and plots keep their aspect ratio, and nothing runs past the bottom margin.
"""

from __future__ import annotations

import io
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .report_analysis import GRADE_COLOURS, Table
from .report_content import (
    Block,
    Bullets,
    FigureBlock,
    Heading,
    Paragraph,
    PictureBlock,
    PictureGrid,
    TableBlock,
)

PAGE_W, PAGE_H = 8.27, 11.69  # A4, inches
MARGIN = 0.6
WIDTH = PAGE_W - 2 * MARGIN
CHAR_WIDTH = 0.55  # a character's mean width, in font sizes (DejaVu Sans)
PDF_PICTURE_SIDE = 192  # pixels of a grid picture in the PDF: sharp when printed small, the file stays small
PDF_SHEET_SIDE = 1100  # pixels of a contact sheet's long side in the PDF (PDF images are stored losslessly)


def _line_height(size: float) -> float:
    return size * 1.35 / 72


def _wrap(text: str, width_in: float, size: float) -> list[str]:
    chars = max(3, int(width_in * 72 / (size * CHAR_WIDTH)))
    return textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False) or [""]


class PageFlow:
    def __init__(self, pdf, title: str):
        self.pdf, self.title = pdf, title
        self.page: Any = None
        self.y = MARGIN  # inches from the top of the page
        self.number = 0

    # -- pages ----------------------------------------------------------------------------------
    def new_page(self) -> None:
        from matplotlib.figure import Figure

        self.finish_page()
        self.page = Figure(figsize=(PAGE_W, PAGE_H))
        self.number += 1
        self.y = MARGIN
        self.page.text(MARGIN / PAGE_W, 0.35 / PAGE_H, f"{self.title} · page {self.number}", fontsize=7, color="grey")

    def finish_page(self) -> None:
        if self.page is not None:
            self.pdf.savefig(self.page)
            self.page = None

    def room(self, height: float) -> None:
        """Start a new page unless `height` inches still fit on this one."""
        if self.page is None or self.y + height > PAGE_H - MARGIN:
            self.new_page()

    def _fx(self, x: float) -> float:
        return (MARGIN + x) / PAGE_W

    def _fy(self, y: float) -> float:
        return 1 - y / PAGE_H

    # -- blocks ---------------------------------------------------------------------------------
    def text(self, text: str, size: float = 9, weight: str = "normal", indent: float = 0.0, gap: float = 0.06):
        height = _line_height(size)
        for line in _wrap(text, WIDTH - indent, size):
            self.room(height)
            self.page.text(self._fx(indent), self._fy(self.y), line, fontsize=size, weight=weight, va="top")
            self.y += height
        self.y += gap

    def heading(self, text: str, keep: float = 0.9) -> None:
        self.room(min(keep, PAGE_H - 2 * MARGIN))  # a heading stays with the start of what follows it
        self.y += 0.12
        self.text(text, size=13, weight="bold", gap=0.1)

    def picture(self, image: Image.Image, caption: str = "", width: float = WIDTH) -> None:
        image = image.copy()
        image.thumbnail((PDF_SHEET_SIDE, PDF_SHEET_SIDE))
        height = width * image.height / image.width
        available = PAGE_H - 2 * MARGIN - 0.4
        if height > available:
            width, height = width * available / height, available
        self.room(height + 0.3)
        ax = self.page.add_axes([self._fx(0), self._fy(self.y + height), width / PAGE_W, height / PAGE_H])
        ax.imshow(np.asarray(image.convert("RGB")))
        ax.axis("off")
        self.y += height + 0.05
        if caption:
            self.text(caption, size=8)
        self.y += 0.1

    def figure(self, figure, caption: str) -> None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=150)
        buffer.seek(0)
        self.picture(Image.open(buffer), caption)

    def table(self, table: Table, caption: str) -> None:
        size = 7.5
        line = _line_height(size)
        widths = _column_widths(table, size)
        whole = sum(self._row_height(r, widths, size, line) for r in [table.header, *table.rows])
        whole += 0.3 if caption else 0.0
        if whole < PAGE_H - 2 * MARGIN and (self.page is None or self.y + whole > PAGE_H - MARGIN):
            self.new_page()  # a table that fits on one page is not split, nor parted from its caption
        if caption:
            self.room(0.25 + 2 * line)
            self.text(caption, size=9, weight="bold", gap=0.02)
        self._row(table.header, [None] * len(widths), widths, size, line, header=True)
        for row, grades in zip(table.rows, table.grades):
            if self._row_height(row, widths, size, line) + self.y > PAGE_H - MARGIN:
                self.new_page()
                self._row(table.header, [None] * len(widths), widths, size, line, header=True)
            self._row(row, grades, widths, size, line)
        self.y += 0.15

    def _row_height(self, row: list[str], widths: list[float], size: float, line: float) -> float:
        return max(len(_wrap(t, w - 0.08, size)) for t, w in zip(row, widths)) * line + 0.06

    def _row(self, row, grades, widths, size, line, header: bool = False) -> None:
        from matplotlib.patches import Rectangle

        height = self._row_height(row, widths, size, line)
        self.room(height)
        x = 0.0
        for text, grade, width in zip(row, grades, widths):
            colour = "#eeeeee" if header else GRADE_COLOURS.get(grade or "", "white")
            self.page.add_artist(
                Rectangle(
                    (self._fx(x), self._fy(self.y + height)),
                    width / PAGE_W,
                    height / PAGE_H,
                    transform=self.page.transFigure,
                    facecolor=colour,
                    edgecolor="#bbbbbb",
                    linewidth=0.5,
                )
            )
            lines = _wrap(text, width - 0.08, size)
            self.page.text(
                self._fx(x + 0.04),
                self._fy(self.y + 0.03),
                "\n".join(lines),
                fontsize=size,
                va="top",
                weight="bold" if header else "normal",
                linespacing=1.2,
            )
            x += width
        self.y += height

    def grid(self, grid: PictureGrid) -> None:
        label_w = 1.3
        cell = (WIDTH - label_w) / max(1, len(grid.columns))
        size = 6.5
        line = _line_height(size)
        notes = max((len(_wrap(n, cell - 0.05, size)) for _, _, ns in grid.rows for n in ns), default=1)
        row_h = cell + notes * line + 0.1
        whole = line + 0.05 + row_h * len(grid.rows)
        self.room(whole if whole < PAGE_H - 2 * MARGIN else row_h + line)  # one page when it fits
        for i, column in enumerate(grid.columns):
            self.page.text(self._fx(label_w + i * cell), self._fy(self.y), column[:28], fontsize=size, va="top")
        self.y += line + 0.05
        for label, pictures, cell_notes in grid.rows:
            self.room(row_h)
            self.page.text(
                self._fx(0), self._fy(self.y + cell / 2), "\n".join(_wrap(label, label_w - 0.1, 7)), fontsize=7
            )
            for i, (picture, note) in enumerate(zip(pictures, cell_notes)):
                left = label_w + i * cell
                if picture is not None:
                    thumb = picture.copy()
                    thumb.thumbnail((PDF_PICTURE_SIDE, PDF_PICTURE_SIDE))
                    side = cell - 0.05
                    ax = self.page.add_axes([self._fx(left), self._fy(self.y + side), side / PAGE_W, side / PAGE_H])
                    ax.imshow(np.asarray(thumb))
                    ax.axis("off")
                self.page.text(
                    self._fx(left),
                    self._fy(self.y + cell),
                    "\n".join(_wrap(note, cell - 0.05, size)),
                    fontsize=size,
                    va="top",
                )
            self.y += row_h
        self.y += 0.1

    def block(self, block: Block) -> None:
        if isinstance(block, Heading):
            self.heading(block.text)
        elif isinstance(block, Paragraph):
            self.text(block.text)
        elif isinstance(block, Bullets):
            for item in block.items:
                self.text(f"• {item}", indent=0.1, gap=0.03)
            self.y += 0.06
        elif isinstance(block, TableBlock):
            self.table(block.table, block.caption)
        elif isinstance(block, FigureBlock):
            self.figure(block.figure, block.caption)
        elif isinstance(block, PictureBlock):
            self.picture(block.image, block.caption)
        else:
            self.grid(block)


def _column_widths(table: Table, size: float) -> list[float]:
    """Short columns get the width of their longest entry; the long ones share the rest by length."""
    inches = size * CHAR_WIDTH / 72
    longest = [
        max([max((len(w) for w in h.split()), default=1)] + [len(r[i]) for r in table.rows])
        for i, h in enumerate(table.header)
    ]
    short = [n <= 10 for n in longest]
    widths = [(n + 1.5) * inches + 0.1 if is_short else 0.0 for n, is_short in zip(longest, short)]
    rest = max(WIDTH - sum(widths), WIDTH * 0.3)
    weights = [min(n, 60) if not is_short else 0 for n, is_short in zip(longest, short)]
    total = sum(weights)
    widths = [w if is_short else rest * n / total for w, n, is_short in zip(widths, weights, short)]
    return [w * WIDTH / sum(widths) for w in widths] if sum(widths) > WIDTH or total == 0 else widths


def _start_height(block: Block | None) -> float:
    """What must fit below a heading for it to stay on its page: the start of the next block."""
    if isinstance(block, FigureBlock):
        width, height = block.figure.get_size_inches()
        return WIDTH * height / width + 0.5
    if isinstance(block, PictureBlock):
        return min(WIDTH * block.image.height / block.image.width, 5.0) + 0.5
    if isinstance(block, PictureGrid):
        whole = ((WIDTH - 1.3) / max(1, len(block.columns)) + 0.45) * len(block.rows) + 0.3
        return whole if whole < PAGE_H - 2 * MARGIN - 0.6 else (WIDTH - 1.3) / max(1, len(block.columns)) + 0.8
    if isinstance(block, TableBlock):
        return min(0.6 + 0.32 * (len(block.table.rows) + 1), PAGE_H - 2 * MARGIN - 1.0)
    return 0.9


def write_report_pdf(path: Path, title: str, blocks: list[Block]) -> None:
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path, metadata={"Title": title, "Creator": "Headshot Studio"}) as pdf:
        flow = PageFlow(pdf, title)
        flow.new_page()
        flow.y = 1.2
        flow.text(title, size=20, weight="bold", gap=0.15)
        flow.text(f"made {time.strftime('%Y-%m-%d %H:%M')}", size=9, gap=0.3)
        for i, block in enumerate(blocks):
            if isinstance(block, Heading):
                after = blocks[i + 1 : i + 3]
                if after and isinstance(after[0], Paragraph):  # a lead-in line stays with what it introduces
                    flow.heading(block.text, 0.5 + _start_height(after[1] if len(after) > 1 else None))
                else:
                    flow.heading(block.text, _start_height(after[0] if after else None))
            else:
                flow.block(block)
        flow.finish_page()
