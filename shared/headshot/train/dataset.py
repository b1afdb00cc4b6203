"""Reading a prepared (kohya-layout) dataset for training."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..dataset import kohya
from ..errors import HeadshotError
from ..photos import header_problem

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
#: unreadable images named in one message; the count says how many more
NAMED_PROBLEMS = 5


@dataclass
class TrainingImage:
    path: Path
    caption: str
    repeats: int
    subset: str  # the kohya folder name, e.g. "20_ohwx woman"


@dataclass
class TrainingSet:
    root: Path
    images: list[TrainingImage]
    trigger: str | None
    class_word: str | None

    @property
    def subsets(self) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for img in self.images:
            entry = found.setdefault(img.subset, {"n_repeats": img.repeats, "img_count": 0})
            entry["img_count"] += 1
        return found

    @property
    def resolution(self) -> int | None:
        """The crops' size rounded down to a multiple of 64 (prepare writes square crops)."""
        from PIL import Image

        with Image.open(self.images[0].path) as img:
            side = min(img.size)
        return side - side % 64 or None

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's ss_tag_frequency: per subset folder, how often each caption tag appears."""
        freq: dict[str, Counter] = {}
        for img in self.images:
            freq.setdefault(img.subset, Counter()).update(t.strip() for t in img.caption.split(",") if t.strip())
        return {k: dict(v) for k, v in freq.items()}


def load_training_set(dataset_dir: str | Path) -> TrainingSet:
    """Images and captions from `headshot prepare` output, or any kohya train_data_dir."""
    root = Path(dataset_dir)
    image_root = root / kohya.IMAGE_ROOT if (root / kohya.IMAGE_ROOT).is_dir() else root
    if not image_root.is_dir():
        raise HeadshotError(f"{root}: no such dataset folder; run `headshot prepare` first", "no_dataset")
    images = []
    for subset in sorted(p for p in image_root.iterdir() if p.is_dir()):
        parsed = kohya.parse_subset_folder(subset.name)
        if parsed is None:
            continue
        repeats, class_tokens = parsed
        for path in sorted(subset.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            caption_file = path.with_suffix(kohya.CAPTION_EXTENSION)
            caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.exists() else class_tokens
            images.append(TrainingImage(path, caption or class_tokens, repeats, subset.name))
    if not images:
        raise HeadshotError(
            f"{image_root} holds no kohya subset folders with images (expected <repeats>_<trigger> <class>/); "
            "run `headshot prepare` on your photos first",
            "no_dataset",
        )
    check_images_readable([img.path for img in images], image_root)
    trigger = class_word = None
    report = root / "report.json"
    if report.exists():
        info = json.loads(report.read_text(encoding="utf-8"))
        trigger, class_word = info.get("trigger"), info.get("class")
    else:
        parsed = kohya.parse_subset_folder(images[0].subset)
        assert parsed is not None  # images come only from folders that parse as subsets
        tokens = parsed[1].split(" ", 1)
        trigger, class_word = tokens[0], (tokens[1] if len(tokens) > 1 else None)
    return TrainingSet(root, images, trigger, class_word)


def epoch_order(images: list[TrainingImage], epoch: int, seed: int) -> list[int]:
    """Indices for one epoch: each image `repeats` times, shuffled by (seed, epoch) so a resumed
    run continues with exactly the images an uninterrupted one would have seen."""
    order = [i for i, img in enumerate(images) for _ in range(img.repeats)]
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return order


def caption_variants(caption: str, count: int, seed: int, keep_tokens: int = 1) -> list[str]:
    """Up to `count` distinct shuffles of the tags after the first `keep_tokens` (the trigger stays first)."""
    parts = [p.strip() for p in caption.split(",") if p.strip()]
    head, tail = parts[:keep_tokens], parts[keep_tokens:]
    variants = [", ".join(parts)]
    rng = random.Random(seed)
    attempts = 0
    while len(variants) < count and attempts < count * 10:
        attempts += 1
        shuffled = tail[:]
        rng.shuffle(shuffled)
        text = ", ".join(head + shuffled)
        if text not in variants:
            variants.append(text)
    return variants


def check_images_readable(paths: list[Path], folder: Path) -> None:
    """Every image in a dataset (or class-image folder) opens, or one error names each that does not, before any
    model loads: kohya datasets come from anywhere, and one bad file would otherwise stop training later."""
    problems = [f"{path.relative_to(folder)}: {why}" for path in paths if (why := header_problem(path))]
    if problems:
        more = f"; and {len(problems) - NAMED_PROBLEMS} more" if len(problems) > NAMED_PROBLEMS else ""
        raise HeadshotError(
            f"{len(problems)} of {len(paths)} images in {folder} cannot be used: "
            + "; ".join(problems[:NAMED_PROBLEMS])
            + f"{more}. Replace or remove them (headshot prepare writes a dataset of checked crops)",
            "bad_dataset_image",
        )
