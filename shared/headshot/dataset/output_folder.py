"""The dataset folder on disk: only our own files, crops streamed through a staging folder, atomic writes.

A prepare run may share its folder with the user's files (even be the photo folder itself), so:
  - a file we would write that is not in our manifest is refused before any work starts;
  - crops go to a private staging folder as they are made (500 photos never sit in memory at once)
    and are renamed into the kohya layout at the end;
  - every file is written under a temporary name and renamed, report.json last: a failure leaves the
    previous report whole;
  - files of the previous run that this run does not write again are removed, and only those.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from PIL import Image

from ..errors import HeadshotError
from ..outputs import OutputManifest, atomic_save, atomic_write_json, atomic_write_text
from . import kohya
from .contact_sheet import contact_sheet

REPORT_NAME = "report.json"
CONTACT_SHEET_NAME = "contact_sheet.jpg"
DATASET_TOML_NAME = "dataset.toml"
PNG_COMPRESS_LEVEL = 1  # zlib level 1: the crops are written once and read by a trainer
#: files at the top of the dataset folder that prepare writes
FIXED_NAMES = (REPORT_NAME, CONTACT_SHEET_NAME, DATASET_TOML_NAME)


def our_files_beside(input_dir: Path, out_dir: Path) -> set[str]:
    """Names in `input_dir` that an earlier prepare into `out_dir` wrote (out == input): never photos."""
    manifest = OutputManifest(out_dir)
    try:
        inside = input_dir.resolve()
    except OSError:
        return set()
    return {Path(rel).name for rel in manifest.files if (out_dir / rel).parent.resolve() == inside}


class DatasetFolder:
    """One run's view of its dataset folder: what it owns, where crops wait, what it has written."""

    def __init__(self, out_dir: Path):
        self.out = Path(out_dir)
        self.manifest = OutputManifest(self.out)
        self.previous = set(self.manifest.files)
        self.written: set[str] = set()
        self.staging: Path | None = None

    def check_ownership(self) -> None:
        """Refuse, before any work, to write over a file that is not ours or to share img/ with one."""
        probe = OutputManifest(self.out)  # claims on a throwaway copy: nothing is recorded yet
        for name in FIXED_NAMES:
            probe.claim(self.out / name)
        image_root = self.out / kohya.IMAGE_ROOT
        if image_root.is_symlink() or (image_root.exists() and not image_root.is_dir()):
            raise HeadshotError(
                f"{image_root} is not a folder Headshot Studio made; move it away or choose "
                "another output folder (nothing was changed)",
                "would_overwrite",
            )
        for root, dirs, files in os.walk(image_root):
            for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
                path = Path(root) / name
                if not self.manifest.owns(path):
                    raise HeadshotError(
                        f"{path} was not written by Headshot Studio, and training reads everything under "
                        f"{image_root}: move it away or choose another output folder (nothing was changed)",
                        "would_overwrite",
                    )

    def __enter__(self) -> DatasetFolder:
        self.staging = Path(tempfile.mkdtemp(prefix=".headshot-staging-", dir=self.out))
        return self

    def __exit__(self, *exc) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)  # our own private temporary folder
            self.staging = None

    def stage(self, image: Image.Image, number: int) -> Path:
        """Write a crop to the staging folder now, so it need not stay in memory.

        PNG's fastest deflate level: 5x quicker than the default for files about 13 % larger, still lossless;
        no fsync here, placing the file syncs it."""
        assert self.staging is not None, "stage() works inside `with DatasetFolder(...)`"
        return atomic_save(
            self.staging / f"{number:05d}.png",
            lambda tmp: image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL),
            durable=False,
        )

    def claim_all(self, paths: list[Path]) -> None:
        """Claim every file of this run before writing any; record them before they exist (a crash
        mid-write then leaves files a re-run knows as its own)."""
        for path in paths:
            self.manifest.claim(path)
            self.written.add(self.manifest.relative(path))
        self.manifest.save()

    def place(self, staged: Path, final: Path) -> Path:
        """Move a staged crop into the dataset under its final name, atomically."""
        return atomic_save(final, lambda tmp: os.replace(staged, tmp))

    def remove_stale(self) -> None:
        """Delete files the previous run wrote that this one did not, then the folders they leave empty."""
        emptied: set[Path] = set()
        root = os.path.realpath(self.out)
        for rel in sorted(self.previous - self.written):
            path = self.out / rel
            # the manifest is data from the folder: an entry that leads outside it is never followed
            if os.path.commonpath([root, os.path.realpath(path.parent)]) != root:
                continue
            if path.is_file() or path.is_symlink():
                path.unlink()
            emptied.update(p for p in path.parents if self.out in p.parents)
        for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.manifest.files = set(self.written)
        self.manifest.save()


def write_dataset(folder: DatasetFolder, outcomes: list, settings, class_word: str, warnings: list[str]) -> Path | None:
    """Crops, captions, TOML and contact sheet, then report.json last; then the previous run's leftovers go."""
    out = folder.out
    kept = [o for o in outcomes if o.status == "kept"]
    subset_dir, repeats, plan = None, None, []
    if kept:
        repeats = settings.repeats or kohya.default_repeats(len(kept))
        subset_dir = out / kohya.IMAGE_ROOT / kohya.subset_folder_name(repeats, settings.trigger, class_word)
        for number, outcome in enumerate(kept, 1):
            stem = re.sub(r"[^\w\-]+", "_", Path(outcome.source).stem)[:60] or "photo"
            plan.append((outcome, subset_dir / f"{number:02d}_{stem}.png"))
    targets = [p for _, image in plan for p in (image, image.with_suffix(kohya.CAPTION_EXTENSION))]
    folder.claim_all(targets + [out / name for name in FIXED_NAMES if kept or name != DATASET_TOML_NAME])
    for outcome, image in plan:
        outcome.crop_path = folder.place(outcome.crop_path, image)
        atomic_write_text(image.with_suffix(kohya.CAPTION_EXTENSION), outcome.caption + "\n")
        outcome.image = image.relative_to(out).as_posix()
    if subset_dir is not None and repeats is not None:  # set above exactly when photos were kept
        kohya.write_dataset_toml(
            out / DATASET_TOML_NAME, subset_dir, f"{settings.trigger} {class_word}", repeats, settings.resolution
        )
    notes = [o.caption if o.status == "kept" else o.message.removeprefix(f"{o.source}: ") for o in outcomes]
    sheet = contact_sheet([(o.thumb, o.source, o.status == "kept", note or "") for o, note in zip(outcomes, notes)])
    atomic_save(out / CONTACT_SHEET_NAME, lambda tmp: sheet.save(tmp, format="JPEG", quality=90))
    atomic_write_json(
        out / REPORT_NAME,
        {
            "photos": [o.as_report() for o in outcomes],
            "summary": {
                "kept": len(kept),
                "rejected": len(outcomes) - len(kept),
                "reasons": dict(Counter(o.reason for o in outcomes if o.status == "rejected")),
            },
            "trigger": settings.trigger,
            "class": class_word,
            "resolution": settings.resolution,
            "dataset_dir": subset_dir.relative_to(out).as_posix() if subset_dir else None,
            "dataset_toml": DATASET_TOML_NAME if kept else None,
            "warnings": warnings,
        },
    )
    folder.remove_stale()
    return subset_dir
