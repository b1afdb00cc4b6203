"""loss.csv (step,loss,lr) and its picture loss.png, both rewritten atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..outputs import atomic_save, atomic_write_text


def trim_loss_log(csv_path: Path, step: int) -> None:
    """Keep the rows up to `step`: a resumed run logs the steps after its checkpoint again."""
    if not csv_path.is_file():
        return
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    kept = lines[:1] + [line for line in lines[1:] if line.split(",")[0].isdigit() and int(line.split(",")[0]) <= step]
    if kept != lines:
        atomic_write_text(csv_path, "\n".join(kept) + "\n")


def draw_loss_curve(csv_path: Path, png_path: Path, size=(640, 320)) -> None:
    """The loss curve (raw and smoothed) as a PNG, drawn with PIL: no plotting library needed."""
    from PIL import Image, ImageDraw

    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:] if line]
    if len(rows) < 2:
        return
    steps = np.array([float(r[0]) for r in rows])
    losses = np.array([float(r[1]) for r in rows])
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = 50, 20, size[0] - 10, size[1] - 30
    lo, hi = float(losses.min()), float(losses.max()) or 1.0
    span = (hi - lo) or 1.0

    def xy(step, value):
        x = left + (step - steps[0]) / max(1.0, steps[-1] - steps[0]) * (right - left)
        return x, bottom - (value - lo) / span * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline=(180, 180, 180))
    draw.line([xy(s, v) for s, v in zip(steps, losses)], fill=(170, 200, 240), width=1)
    draw.line([xy(s, v) for s, v in zip(steps[window - 1 :], smooth)], fill=(30, 90, 200), width=2)
    draw.text((left, 4), f"loss  (step {int(steps[-1])}, last {losses[-1]:.4f})", fill="black")
    draw.text((4, top), f"{hi:.3f}", fill="black")
    draw.text((4, bottom - 10), f"{lo:.3f}", fill="black")
    atomic_save(png_path, lambda tmp: img.save(tmp, format="PNG"))
