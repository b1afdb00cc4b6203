"""A finished batch: each picture saved and scored as it comes, then ranked into results.json.

Output rules (issue 8): a picture gets a name no other picture of the batch has and no file we did
not write has (OutputManifest), so an input in the output folder is never overwritten or re-encoded;
every file is written to a temporary name and renamed; results.json lists only files that exist.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from ..dataset.contact_sheet import contact_sheet
from ..outputs import OutputManifest, atomic_save, atomic_write_json, check_writable
from .detail_and_restore import Finishing
from .ranking import likeness, rank

RESULTS_NAME = "results.json"
SHEET_NAME = "contact_sheet.jpg"
FACELESS_DIR = "faceless"
BELOW_TOP_DIR = "below_top"
THUMB_SIDE = 184  # the contact sheet's picture area (its tile less the border)
MAX_STEM = 100


def printable(text: str | os.PathLike) -> str:
    """A file name as text JSON and terminals accept: undecodable bytes become U+FFFD."""
    return os.fsdecode(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class OutputFolder:
    """The batch's output folder: unique picture names, our own files only, atomic writes."""

    PLACES = ("", FACELESS_DIR, BELOW_TOP_DIR)

    def __init__(self, folder: str | Path, inputs=()):
        self.folder = check_writable(folder, "--out")
        self.manifest = OutputManifest(self.folder)
        self.inputs = {os.path.realpath(p) for p in inputs}  # realpath: a link loop is no error
        self._used: set[str] = set()

    def _free(self, path: Path) -> bool:
        exists = path.exists() or path.is_symlink()
        if os.path.realpath(path) in self.inputs:
            return False
        return not exists or self.manifest.owns(path)

    def name_for(self, stem: str) -> str:
        """`<stem>.png`, or `<stem>-2.png`…: new to this batch, and free (or ours) in every place it may move to."""
        stem = printable(stem)[:MAX_STEM] or "picture"
        n = 1
        while True:
            name = f"{stem}.png" if n == 1 else f"{stem}-{n}.png"
            if name not in self._used and all(self._free(self.folder / place / name) for place in self.PLACES):
                self._used.add(name)
                return name
            n += 1

    def save_picture(self, relative: str, image: Image.Image) -> Path:
        path = self.manifest.claim(self.folder / relative)
        self.manifest.save()  # before the picture: a batch killed midway still knows its own files
        # the temporary name ends in .tmp.png: PIL must be told the format, not guess it
        return atomic_save(path, lambda tmp: image.save(tmp, format="PNG"))

    def move(self, name: str, place: str) -> str:
        """Move our picture `name` into the subfolder `place`; its new relative name."""
        target = self.manifest.claim(self.folder / place / name)
        target.parent.mkdir(exist_ok=True)
        os.replace(self.folder / name, target)
        self.manifest.files.discard(name)
        return f"{place}/{name}"

    def write_json(self, relative: str, data) -> None:
        atomic_write_json(self.manifest.claim(self.folder / relative), data)

    def write_jpeg(self, relative: str, image: Image.Image) -> None:
        atomic_save(self.manifest.claim(self.folder / relative), lambda tmp: image.save(tmp, format="JPEG", quality=90))

    def save_manifest(self) -> None:
        self.manifest.save()


class Batch:
    """Pictures added one by one (saved and scored at once, so only thumbnails stay in memory), then
    ranked and written: results.json, the contact sheet, faceless/ and below_top/."""

    def __init__(self, out_dir: str | Path, finishing: Finishing, inputs=()):
        self.out = OutputFolder(out_dir, inputs)
        self.finishing = finishing
        self.entries: list[dict] = []
        self._thumbs: dict[int, Image.Image] = {}

    def add(self, stem: str, image: Image.Image, entry: dict) -> dict:
        name = self.out.name_for(stem)
        self.out.save_picture(name, image)
        result = likeness(image, self.finishing.analyzer, self.finishing.identity)
        entry = {
            "image": name,
            **entry,
            "identity_score": result.score,
            "identity_distance": result.distance,
            "faceless": result.faceless,
        }
        thumb = image.convert("RGB")
        thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
        self._thumbs[id(entry)] = thumb
        self.entries.append(entry)
        return entry

    def skip(self, entry: dict, reason: str, message: str) -> dict:
        """A picture that could not be used: listed with its reason, no file."""
        entry = {
            "image": None,
            **entry,
            "skipped": True,
            "reason": reason,
            "message": message,
            "identity_score": None,
            "identity_distance": None,
            "faceless": None,
        }
        self.entries.append(entry)
        return entry

    def write(self, top: int | None) -> list[dict]:
        pictures = [e for e in self.entries if not e.get("skipped")]
        skipped = [e for e in self.entries if e.get("skipped")]
        kept, below, faceless = rank(pictures, top)
        for place, group in ((FACELESS_DIR, faceless), (BELOW_TOP_DIR, below)):
            for entry in group:
                entry["image"] = self.out.move(entry["image"], place)
        for number, entry in enumerate(kept, 1):
            entry["rank"] = number
        for entry in below + faceless + skipped:
            entry["rank"] = None
        ordered = kept + below + faceless + skipped
        # results.json last: when it changes, everything it names is already in place
        self.out.write_jpeg(SHEET_NAME, contact_sheet([self._tile(e) for e in ordered]))
        self.out.write_json(RESULTS_NAME, ordered)
        self.out.save_manifest()
        return ordered

    def _tile(self, entry: dict):
        if entry.get("skipped"):
            return None, printable(Path(entry.get("source", "?")).name), False, f"skipped: {entry['message']}"
        note = (
            "no face"
            if entry["faceless"]
            else (
                (f"#{entry['rank']} " if entry["rank"] else "below top ")
                + (f"likeness {entry['identity_score']:.2f}" if entry["identity_score"] is not None else "not scored")
            )
        )
        return self._thumbs[id(entry)], Path(entry["image"]).name, entry["rank"] is not None, note
