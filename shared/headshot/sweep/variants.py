"""Trigger-word variants: a copy of the dataset whose captions and subset folders carry another trigger word,
so a sweep can compare prompt tokens (the course brief's "prompt token count") with everything else equal."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..dataset import kohya
from ..outputs import atomic_write_json, atomic_write_text
from ..train.dataset import load_training_set

DONE_MARK = ".sweep-variant.json"  # written last: a copy without it was cut short and is made again


def _replace_word(text: str, old: str, new: str) -> str:
    return re.sub(rf"(?<!\w){re.escape(old)}(?!\w)", new, text)


def trigger_variant(source: Path, folder: Path, old: str, new: str) -> Path:
    """`folder` as a copy of the dataset `source` with the trigger `old` replaced by `new` (made once)."""
    if (folder / DONE_MARK).is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # our own copy, cut short: made again from the source
    training_set = load_training_set(source)
    for image in training_set.images:
        parsed = kohya.parse_subset_folder(image.subset)
        assert parsed is not None  # load_training_set lists only images in subset folders
        repeats, tokens = parsed
        subset = folder / kohya.IMAGE_ROOT / f"{repeats}_{_replace_word(tokens, old, new)}"
        subset.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image.path, subset / image.path.name)
        caption = subset / image.path.with_suffix(kohya.CAPTION_EXTENSION).name
        atomic_write_text(caption, _replace_word(image.caption, old, new))
    report = source / "report.json"
    info = {}
    if report.is_file():
        try:
            loaded = json.loads(report.read_text(encoding="utf-8"))
            info = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            info = {}
    atomic_write_json(folder / "report.json", {**info, "trigger": new, "class": training_set.class_word})
    atomic_write_json(folder / DONE_MARK, {"source": str(source), "trigger": new, "replaces": old})
    return folder
