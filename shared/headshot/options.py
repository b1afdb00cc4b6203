"""Checks on options every stage shares (seeds, counts, LoRA files): one wording, one error code."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .errors import HeadshotError

MAX_SEED = 2**32 - 1


def bad_option(message: str) -> HeadshotError:
    return HeadshotError(message, "bad_option")


def check_seeds(seed: int, count: int = 1, option: str = "--seed") -> None:
    """Every seed used (seed .. seed + count - 1) fits the 32-bit range hosts and samplers accept."""
    if not 0 <= seed <= MAX_SEED:
        raise bad_option(f"{option} {seed} is out of range: use a whole number from 0 to {MAX_SEED}")
    if seed + count - 1 > MAX_SEED:
        raise bad_option(f"{option} {seed} with {count} pictures goes past {MAX_SEED}: use a seed of at most "
                         f"{MAX_SEED - count + 1}")


def check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise bad_option(f"{option} {value}: must be at least 1")


def check_lora_files(paths: Iterable[str | Path], option: str = "--lora") -> None:
    """Every LoRA exists and is a readable .safetensors file."""
    from safetensors import safe_open

    for path in map(Path, paths):
        if not path.is_file():
            what = "is a folder, not a LoRA file" if path.is_dir() else "not found"
            raise HeadshotError(f"{option} {path}: {what}; give the .safetensors file `headshot train` wrote",
                                "lora_missing")
        try:
            with safe_open(str(path), "pt") as f:
                f.metadata()
        except Exception:
            raise HeadshotError(f"{option} {path}: not a readable .safetensors LoRA (damaged, or another format)",
                                "lora_unreadable") from None
