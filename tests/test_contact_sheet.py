"""The prepare contact sheet shows each photo in its tile, framed green when kept and red when rejected."""

from __future__ import annotations

import numpy as np
from PIL import Image

from headshot.dataset.contact_sheet import KEPT_COLOUR, REJECTED_COLOUR, contact_sheet

TILE, PAD = 192, 8


def _tile_origin(i: int, columns: int) -> tuple[int, int]:
    return PAD + (i % columns) * (TILE + PAD), PAD + (i // columns) * (TILE + 58 + PAD)


def test_each_tile_holds_its_photo_and_the_colour_of_its_verdict(astronaut_img, group_img):
    entries = [
        (astronaut_img, "a.jpg", True, ""),
        (group_img, "group.jpg", False, "multiple_faces: 6 faces"),
        (None, "notes.txt", False, "not_an_image"),
    ]
    sheet = np.asarray(contact_sheet(entries, columns=2)).astype(int)
    assert sheet.shape == (2 * (TILE + 58 + PAD) + PAD, 2 * (TILE + PAD) + PAD, 3)
    for i, (photo, _, kept, _) in enumerate(entries):
        x, y = _tile_origin(i, 2)
        assert tuple(sheet[y + 1, x + TILE // 2]) == (KEPT_COLOUR if kept else REJECTED_COLOUR)
        inside = sheet[y + 4 : y + TILE - 4, x + 4 : x + TILE - 4]
        if photo is None:
            assert inside.std() < 20  # the grey "no preview" tile
            continue
        expected = np.asarray(photo.convert("RGB").resize((16, 16))).astype(int)
        shown = np.asarray(Image.fromarray(inside.astype(np.uint8)).resize((16, 16))).astype(int)
        # each tile resembles its own photo far more than the other one
        other = entries[1 - i][0]
        assert (
            np.abs(shown - expected).mean() < np.abs(shown - np.asarray(other.convert("RGB").resize((16, 16)))).mean()
        )
