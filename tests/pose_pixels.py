"""A pixel of a rendered pose image at a point in image fractions: shared by the pose tests
(test_pose_render, test_pose_presets)."""

from __future__ import annotations

from PIL import Image


def px(image: Image.Image, point) -> tuple:
    x, y = point
    return image.getpixel((int(round(x * image.width)), int(round(y * image.height))))
