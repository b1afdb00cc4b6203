"""`headshot finish`: detail, restore and rank pictures a person already has.

Every file of the input folder is judged, as prepare does: one that cannot be read (damaged, not
an image, a FIFO, a broken link) is listed in results.json with its reason and the batch goes on.
Inputs are only read: outputs get names of their own, even when --out is the input folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import HeadshotError, PhotoRejected
from ..outputs import OutputManifest
from ..photos import read_photo
from .detail_and_restore import Finishing, finish_image
from .ranked_results import Batch, printable


def list_inputs(source: str | Path, out_dir: str | Path) -> list[Path]:
    """The files to finish: `source` itself, or the visible entries of the folder (not its subfolders,
    not the files an earlier run wrote into it when it is also the output folder)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise HeadshotError(f"{source}: not found; give a picture or a folder of pictures", "not_found")
    ours = OutputManifest(out_dir) if os.path.realpath(source) == os.path.realpath(out_dir) else None
    paths = []
    for path in sorted(source.iterdir()):
        if path.name.startswith(".") or (path.is_dir() and not path.is_symlink()):
            continue
        if ours is not None and ours.owns(path):
            continue
        paths.append(path)
    if not paths:
        raise HeadshotError(f"no pictures in {printable(source)}: the folder is empty", "no_images")
    return paths


def _unusable(path: Path) -> tuple[str, str] | None:
    """(reason, message) for an entry that is not a regular file, else None."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:  # a broken link, a link loop
        return "unreadable", f"{printable(path.name)}: cannot be opened ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file"
    return "not_a_file", f"{printable(path.name)}: {kind}, not a picture"


def detail_with_loras(finishing: Finishing, loras: list[str], weight: float = 0.8) -> None:
    """Repaint faces with the identity LoRA(s) and their trigger; several LoRAs: one per face, left to right."""
    from ..sampling.protocol import LoraWeight
    from ..train.lora_files import lora_subject

    trigger, class_word = lora_subject(loras[0]) if loras else (None, None)
    subject = " ".join(t for t in (trigger, class_word) if t)
    finishing.detail_prompt = (f"{subject}, detailed face, sharp focus".strip(", "), "blurry, deformed, lowres")
    finishing.detail_loras = [LoraWeight(p, weight) for p in loras]
    finishing.group = len(loras) > 1


def finish_pictures(
    paths: list[Path],
    out_dir: str | Path,
    finishing: Finishing,
    *,
    seed: int = 0,
    top: int | None = None,
    progress=None,
) -> list[dict]:
    """Finish each picture into `out_dir` and rank them; returns the results.json entries."""
    batch = Batch(out_dir, finishing, inputs=paths)
    for i, path in enumerate(paths):
        if progress:
            progress(i, len(paths), f"finishing {printable(path.name)}")
        entry = {"source": printable(path), "seed": seed + i, "style": None}
        problem = _unusable(path)
        if problem is None:
            try:
                picture = read_photo(path).image
            except PhotoRejected as exc:
                problem = exc.code, printable(str(exc))
        if problem is not None:
            batch.skip(entry, *problem)
            continue
        image, done = finish_image(picture, finishing, seed + i)
        batch.add(path.stem, image, {**entry, **done})
    return batch.write(top)
