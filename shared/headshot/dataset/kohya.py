"""The kohya dataset layout: `<repeats>_<trigger> <class>/` folders and a dataset TOML sd-scripts accepts."""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..outputs import write_toml

#: the folder under a prepared dataset that holds the kohya subset folders (sd-scripts' train_data_dir)
IMAGE_ROOT = "img"
CAPTION_EXTENSION = ".txt"
# Images seen per epoch that kohya guides aim for with 10–20 photos of a person (about 150–200).
STEPS_PER_EPOCH_TARGET = 160

_SUBSET = re.compile(r"^(\d+)_(.+)$")


def default_repeats(image_count: int) -> int:
    """Repeats so one epoch shows about STEPS_PER_EPOCH_TARGET images, between 5 and 40."""
    return max(5, min(40, math.ceil(STEPS_PER_EPOCH_TARGET / max(1, image_count))))


def subset_folder_name(repeats: int, trigger: str, class_word: str) -> str:
    return f"{repeats}_{trigger} {class_word}"


def parse_subset_folder(name: str) -> tuple[int, str] | None:
    """(repeats, class tokens) from a kohya subset folder name, or None if it is not one."""
    match = _SUBSET.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def dataset_config(subset_dir: Path, class_tokens: str, repeats: int, resolution: int) -> dict:
    """A dataset config for sd-scripts' --dataset_config (DreamBooth-style subset with captions)."""
    general = {
        "caption_extension": CAPTION_EXTENSION,  # sd-scripts' own default is .caption
        "shuffle_caption": True,
        "keep_tokens": 1,  # the "trigger class" token stays first when captions are shuffled
        "enable_bucket": False,  # every crop is square at the dataset resolution
    }
    subset = {
        "image_dir": Path(subset_dir).resolve().as_posix(),
        "class_tokens": class_tokens,
        "num_repeats": repeats,
    }
    return {"general": general, "datasets": [{"resolution": resolution, "batch_size": 1, "subsets": [subset]}]}


def write_dataset_toml(path: Path, subset_dir: Path, class_tokens: str, repeats: int, resolution: int) -> Path:
    """The dataset config written as TOML at `path` (atomically)."""
    return write_toml(
        path,
        dataset_config(subset_dir, class_tokens, repeats, resolution),
        comment=f"Written by Headshot Studio; sd-scripts: --dataset_config {Path(path).name}",
    )
