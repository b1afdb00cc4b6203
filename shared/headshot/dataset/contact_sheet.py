"""A contact sheet of kept and rejected photos with their reasons, for people who would rather look."""

from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

KEPT_COLOUR = (46, 160, 67)
REJECTED_COLOUR = (207, 34, 46)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def contact_sheet(
    entries: list[tuple[Image.Image | None, str, bool, str]], tile: int = 192, columns: int = 5
) -> Image.Image:
    """Tiles of (thumbnail or None, title, kept, note): green border kept, red rejected."""
    columns = max(1, min(columns, len(entries) or 1))
    rows = max(1, -(-len(entries) // columns))
    caption_h = 58
    pad = 8
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + caption_h + pad) + pad), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    title_font, note_font = _font(13), _font(11)
    for i, (thumb, title, kept, note) in enumerate(entries):
        x = pad + (i % columns) * (tile + pad)
        y = pad + (i // columns) * (tile + caption_h + pad)
        colour = KEPT_COLOUR if kept else REJECTED_COLOUR
        if thumb is not None:
            fitted = ImageOps.pad(thumb.convert("RGB"), (tile - 8, tile - 8), color=(230, 230, 230))
            sheet.paste(fitted, (x + 4, y + 4))
        else:
            draw.rectangle((x + 4, y + 4, x + tile - 5, y + tile - 5), fill=(230, 230, 230))
            draw.text((x + tile // 2, y + tile // 2), "no preview", fill=(120, 120, 120), font=title_font, anchor="mm")
        draw.rectangle((x, y, x + tile - 1, y + tile - 1), outline=colour, width=4)
        draw.text((x, y + tile + 3), ("KEPT  " if kept else "REJECTED  ") + title[:24], fill=colour, font=title_font)
        for j, line in enumerate(textwrap.wrap(note, width=tile // 6)[:3]):
            draw.text((x, y + tile + 19 + j * 12), line, fill=(60, 60, 60), font=note_font)
    return sheet
