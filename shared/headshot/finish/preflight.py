"""Checks on the finishing options (generate's and finish's) that must fail before any model loads."""

from __future__ import annotations

from pathlib import Path

from ..errors import HeadshotError
from ..options import bad_option, check_lora_files, check_positive, check_seeds
from ..outputs import check_writable


def check_fraction(value: float | None, option: str) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise bad_option(f"{option} {value}: must be from 0 to 1")


def check_finishing_options(
    *,
    out: Path,
    top: int | None = None,
    denoise: float | None = None,
    fidelity: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    count: int = 1,
    identity: Path | None = None,
    reference: Path | None = None,
    restore: str | None = None,
    restore_dirs=(),
    loras=(),
    detailer: bool = False,
    base_model: str | None = None,
) -> None:
    """One clear error for the first bad option; `out` is created and proved writable."""
    check_positive(top, "--top")
    check_positive(steps, "--steps")
    check_fraction(denoise, "--denoise")
    check_fraction(fidelity, "--fidelity")
    check_seeds(seed, count)
    if detailer and not base_model:
        raise bad_option("--detailer repaints faces with a model: give --base-model too")
    for path, option in ((identity, "--identity"), (reference, "--reference")):
        if path is not None and not Path(path).exists():
            raise HeadshotError(f"{option} {path}: not found; check the path", "not_found")
    check_lora_files(loras)
    if restore:
        from .restore import find_restore_model

        find_restore_model(restore, restore_dirs)  # a missing model names the folders searched
    check_writable(out, "--out")
