"""ID photos: a style's print-size preset turned into the generation canvas, the head's framing and the print.

A preset says the print size (35 x 45 mm) and how tall the head is on it, chin to crown (32-36 mm).
The picture is generated near the print's aspect with the pose framed so the head has that share
of the height, then cropped to the exact aspect and scaled to the print's pixels at a dpi.
"""

from __future__ import annotations

from PIL import Image

from ..errors import HeadshotError
from ..options import bad_option
from .pose import People, Point, _checked, head_extent
from .style_schema import SizePreset

DEFAULT_DPI = 300
# the room above the crown as a share of what the head leaves free; the rest (the shoulders) goes below
_HEADROOM = 0.4


def frame_head(
    people: People, width: int, height: int, head_share: float, *, source_aspect: float = 1.0, drop_outside: bool = True
) -> People:
    """One person's pose (normalised for a canvas of aspect `source_aspect`; presets are square) on a
    `width` x `height` canvas, scaled without stretching so the head, chin to crown, is `head_share`
    of the height, centred across, with a little headroom above. Points off the canvas become None
    when `drop_outside` (a detector would not see them: with a passport's head, the neck and most of
    the shoulders are below the frame)."""
    if not 0 < head_share < 1:
        raise HeadshotError(
            f"The head's share of the picture must be between 0 and 1 (got {head_share}).", "invalid_size_preset"
        )
    people = [[None if p is None else (p[0] * source_aspect, p[1]) for p in person] for person in _checked(people)]
    extent = head_extent(people[0]) if people else None
    if extent is None:
        raise HeadshotError(
            "An ID photo's pose needs a face (nose, eyes or ears) to frame the head by; pick a pose that shows one.",
            "invalid_pose",
        )
    cx, crown, chin = extent
    scale = head_share * height / max(chin - crown, 1e-6)  # pixels per pose unit (the pose's units are square)
    top = _HEADROOM * (1 - head_share) * height
    out = []
    for person in people:
        moved: list[Point] = []
        for p in person:
            if p is None:
                moved.append(None)
                continue
            x = (width / 2 + (p[0] - cx) * scale) / width
            y = (top + (p[1] - crown) * scale) / height
            moved.append((x, y) if (0 <= x <= 1 and 0 <= y <= 1) or not drop_outside else None)
        out.append(moved)
    return out


def to_print(image: Image.Image, preset: SizePreset, dpi: int = DEFAULT_DPI) -> Image.Image:
    """The picture cropped to the print's aspect (centred: the head was framed on the canvas) and
    scaled to the print's pixels at `dpi`."""
    if not isinstance(dpi, int) or isinstance(dpi, bool) or not 72 <= dpi <= 1200:
        raise bad_option(f"--dpi {dpi}: use a whole number from 72 to 1200 (300 is usual for prints)")
    w, h = image.size
    aspect = preset.crop_aspect
    if w / h > aspect:
        crop_w, crop_h = round(h * aspect), h
    else:
        crop_w, crop_h = w, round(w / aspect)
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    cropped = image.crop((left, top, left + crop_w, top + crop_h))
    return cropped.resize(preset.print_pixels(dpi), Image.Resampling.LANCZOS)
