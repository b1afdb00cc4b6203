"""Checks on generate's options that must fail before any model loads: seeds, sizes, styles, LoRA files.

Whether a LoRA fits the base model's family is checked by headshot.families (check_lora_families).
"""

from __future__ import annotations

from pathlib import Path

from ..options import bad_option, check_lora_files, check_positive, check_seeds
from ..outputs import safe_name

MIN_SIDE, MAX_SIDE = 64, 4096  # a 4096 x 4096 picture is 256 MB of latents per step on SDXL: already huge


def parse_size(text: str | None, option: str = "--size") -> tuple[int, int] | None:
    """ "512x640" -> (512, 640): multiples of 8 (the latent is 1/8 of the picture) within sane bounds."""
    if not text:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise bad_option(f"{option} {text}: write it as WIDTHxHEIGHT, e.g. 512x640") from None
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise bad_option(f"{option} {text}: each side must be from {MIN_SIDE} to {MAX_SIDE} pixels")
        if side % 8:
            lower = side - side % 8
            raise bad_option(f"{option} {text}: {side} is not a multiple of 8; use {lower} or {lower + 8}")
    return width, height


def check_generate_options(
    *,
    style: str,
    style_dirs=(),
    count: int,
    seed: int,
    steps: int | None = None,
    trigger: str | None = None,
    class_word: str | None = None,
    loras=(),
    pose_image: str | Path | None = None,
    annotator_dir: str | Path | None = None,
    size_preset: str | None = None,
    dpi: int | None = None,
) -> None:
    """generate's own options, before any model loads (the finishing options are checked by finish)."""
    from .styles import get_style

    safe_name(style, "--style")
    for value, option in ((trigger, "--trigger"), (class_word, "--class")):
        if value is not None:
            safe_name(value, option)
    check_positive(count, "--count")
    check_positive(steps, "--steps")
    check_seeds(seed, count)
    chosen = get_style(style, style_dirs)  # an unknown style says "did you mean"
    if size_preset is not None:
        chosen.size_preset(size_preset)  # an unknown one lists the style's presets
    if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, int) or not 72 <= dpi <= 1200):
        raise bad_option(f"--dpi {dpi}: use a whole number from 72 to 1200 (300 is usual for prints)")
    if pose_image is not None:
        from .pose_detect import check_pose_detector

        if not Path(pose_image).expanduser().is_file():
            raise bad_option(f"--pose-image {pose_image}: no such file; give a photo whose pose the pictures take")
        check_pose_detector(annotator_dir)  # controlnet_aux and its weights, before any model loads
    check_lora_files(loras)
