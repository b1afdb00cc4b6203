"""report.html: one self-contained file (styles and pictures inline as data: URIs), every text escaped."""

from __future__ import annotations

import base64
import io
from html import escape

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
from .report_figures import png_bytes

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top;text-align:left}th{background:#f0f0f0}caption{text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}img{max-width:100%}
.grid td{text-align:center;font-size:.75em;width:200px}.grid img{width:100%;max-width:256px}
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def jpeg_uri(image: Image.Image, quality: int = 80) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return data_uri(buffer.getvalue(), "image/jpeg")


def _table(table: Table, caption: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = []
    for row, grades in zip(table.rows, table.grades):
        cells = []
        for text, grade in zip(row, grades):
            style = f' style="background:{GRADE_COLOURS[grade]}"' if grade in GRADE_COLOURS else ""
            title = f' class="band-{escape(grade)}"' if grade else ""
            cells.append(f"<td{title}{style}>{escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _grid(grid: PictureGrid) -> str:
    head = "<th></th>" + "".join(f"<th>{escape(c)}</th>" for c in grid.columns)
    rows = []
    for label, pictures, notes in grid.rows:
        cells = []
        for picture, note in zip(pictures, notes):
            img = f'<img src="{jpeg_uri(picture)}" alt="{escape(label)}">' if picture is not None else ""
            cells.append(f"<td>{img}<br>{escape(note)}</td>")
        rows.append(f"<tr><th>{escape(label)}</th>{''.join(cells)}</tr>")
    return f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h2>{escape(block.text)}</h2>"
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, TableBlock):
        return _table(block.table, block.caption)
    if isinstance(block, FigureBlock):
        uri = data_uri(png_bytes(block.figure), "image/png")
        caption = f"<figcaption>{escape(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img src="{uri}" alt="{escape(block.caption or "plot")}">{caption}</figure>'
    if isinstance(block, PictureBlock):
        caption = f"<figcaption>{escape(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img src="{jpeg_uri(block.image)}" alt="{escape(block.caption)}">{caption}</figure>'
    return _grid(block)


def report_html(title: str, blocks: list[Block]) -> str:
    body = "\n".join(_block(b) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )
