"""Prepare: from a folder of selfies to a screened, captioned kohya dataset with a report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..errors import HeadshotError, PhotoRejected
from ..faces import FaceAnalyzer, load_face_analyzer
from ..faces.framing import find_upright
from ..faces.subject import pick_subject
from ..outputs import FolderLock, check_writable
from ..photos import FolderEntry, Photo, read_photo, scan_folder
from .captions import build_caption, clean_tags, load_tag_rules
from .output_folder import (
    CONTACT_SHEET_NAME,
    DATASET_TOML_NAME,
    REPORT_NAME,
    DatasetFolder,
    our_files_beside,
    write_dataset,
)
from .photo_screen import examine_photos, look_closer
from .prepare_settings import PrepareSettings
from .screening import ScreeningSettings, hamming, identity_consensus
from .tagging import find_tagger

__all__ = ["CONTACT_SHEET_NAME", "DATASET_TOML_NAME", "REPORT_NAME", "prepare_dataset"]

DEFAULT_CLASS = "person"
#: fewer kept photos get a warning: training then reproduces the photos more than it learns the face
ADVISED_PHOTOS = 3
#: contact-sheet tiles are 192 px: this is all of a photo that stays in memory once its crop is on disk
THUMB_SIDE = 184

Progress = Callable[[int, int, str], None]


@dataclass
class PhotoOutcome:
    source: str
    status: str = "rejected"
    reason: str | None = None
    message: str = ""
    image: str | None = None
    caption: str | None = None
    details: dict = field(default_factory=dict)
    # working state, not reported: the crop waits on disk, only a thumbnail stays in memory
    crop_path: Path | None = None
    thumb: Image.Image | None = None
    embedding: np.ndarray | None = None
    overridden: dict | None = None

    @property
    def crop(self) -> Image.Image | None:
        """The full-size crop, read back from disk (kept photos: the dataset image)."""
        if self.crop_path is None:
            return None
        with Image.open(self.crop_path) as img:
            return img.convert("RGB")

    def reject(self, code: str, message: str) -> None:
        self.status, self.reason, self.message = "rejected", code, message

    def as_report(self) -> dict:
        entry: dict[str, Any] = {
            "source": self.source,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
        }
        if self.status == "kept":
            entry["image"] = self.image
            entry["caption"] = self.caption
        if self.overridden:
            entry["kept_despite"] = self.overridden
        entry.update(self.details)
        return entry


@dataclass
class PrepareResult:
    out_dir: Path
    photos: list[PhotoOutcome]
    class_word: str
    subset_dir: Path | None
    warnings: list[str]

    @property
    def kept(self) -> list[PhotoOutcome]:
        return [p for p in self.photos if p.status == "kept"]


def prepare_dataset(
    input_dir: str | Path,
    out_dir: str | Path,
    settings: PrepareSettings | None = None,
    analyzer: FaceAnalyzer | None = None,
    tagger=None,
    progress: Progress | None = None,
) -> PrepareResult:
    """Screen, frame and caption every photo in `input_dir`; write the dataset to `out_dir`.

    Writes the report even when no photo is kept, then raises HeadshotError("no_photos_kept").
    Nothing in `input_dir` is modified, and in `out_dir` only files an earlier prepare wrote are replaced.
    """
    settings = settings or PrepareSettings()
    settings.validate()
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    # everything that can fail fast does, before the folder is touched or a model loads
    entries = scan_folder(input_dir, skip=our_files_beside(input_dir, out_dir))
    if not entries:
        raise HeadshotError(f"{input_dir} holds no files; put 3–20 photos of one person in it", "no_photos")
    _check_keep(settings.keep, entries, input_dir)
    references = [_read_reference(path) for path in settings.reference]
    rules = load_tag_rules(settings.tag_rules)
    check_writable(out_dir, "--out")
    with FolderLock(out_dir, "dataset folder"), DatasetFolder(out_dir) as folder:
        folder.check_ownership()
        # photos are screened in worker processes only with an analyzer prepare builds (so a worker can
        # build its own) that uses one core: insightface's runtime already uses them all
        pooled = analyzer is None
        analyzer = analyzer or load_face_analyzer(settings.face_backend, settings.face_model_dirs)
        pooled = pooled and analyzer.name == "dlib"
        warnings: list[str] = []
        if tagger is None and settings.tagger != "none":
            tagger = find_tagger(settings.tagger, settings.tagger_dirs)
            if tagger is None:
                warnings.append("no tagger model found (WD14 or DeepDanbooru): captions are the trigger and class only")
        outcomes = _screen_all(entries, folder, analyzer, settings, progress, pooled)
        reference = _reference_embeddings(references, analyzer, settings)
        _screen_identity(outcomes, analyzer, reference, warnings)
        _apply_keep(outcomes, settings.keep, warnings)
        kept = [o for o in outcomes if o.status == "kept"]
        if 0 < len(kept) < ADVISED_PHOTOS:
            warnings.append(
                f"only {len(kept)} photo{'s' if len(kept) > 1 else ''} kept: from fewer than {ADVISED_PHOTOS} a LoRA "
                "copies the photos instead of learning the face (10–20 of varied angles and light are best); add "
                "photos, or use --single-photo for one photo"
            )
        class_word = settings.class_word or _detect_class(kept, analyzer, warnings)
        _caption(kept, settings, class_word, tagger, rules, progress or _quiet)
        subset_dir = write_dataset(folder, outcomes, settings, class_word, warnings)
    for outcome in outcomes:
        if outcome.status != "kept":
            outcome.crop_path = None  # its staged crop went with the staging folder
    result = PrepareResult(out_dir, outcomes, class_word, subset_dir, warnings)
    if not kept:
        reasons = Counter(o.reason for o in outcomes)
        summary = ", ".join(f"{n} {code}" for code, n in reasons.most_common())
        raise HeadshotError(
            f"no photo could be used ({summary}); see {out_dir / REPORT_NAME} for each photo's reason",
            "no_photos_kept",
        )
    return result


def _quiet(done: int, total: int, message: str) -> None:
    pass


def _check_keep(keep: set[str], entries: list[FolderEntry], input_dir: Path) -> None:
    missing = sorted(keep - {e.name for e in entries})
    if missing:
        raise HeadshotError(
            f"--keep {missing[0]}: no such file in {input_dir}; give a file name from that folder "
            "as it is written there (e.g. IMG_0001.jpg)",
            "bad_option",
        )


def _read_reference(path: Path) -> Photo:
    try:
        return read_photo(path)
    except PhotoRejected as exc:
        raise HeadshotError(f"--reference photo {exc}", "bad_reference") from None


def _screen_all(
    entries, folder: DatasetFolder, analyzer, settings: PrepareSettings, progress, pooled: bool
) -> list[PhotoOutcome]:
    report = progress or _quiet
    duplicate_bits = ScreeningSettings().duplicate_bits
    readable = [(e.path, e.name) for e in entries if e.problem is None]
    examined = examine_photos(readable, analyzer, settings, pooled, folder.staging)
    outcomes: list[PhotoOutcome] = []
    hashes: list[tuple[np.ndarray, PhotoOutcome]] = []
    for index, entry in enumerate(entries):
        report(index, len(entries), f"screening {entry.name}")
        outcome = PhotoOutcome(entry.name)
        outcomes.append(outcome)
        if entry.problem is not None:
            outcome.reject(entry.problem.code, str(entry.problem))
            continue
        found = next(examined)
        outcome.details.update(found.details)
        outcome.embedding = found.embedding
        if found.rejection is not None:
            outcome.reject(*found.rejection)
        else:
            assert found.photo_hash is not None  # every photo that passed was hashed
            twin = next((o for h, o in hashes if hamming(found.photo_hash, h) <= duplicate_bits), None)
            if twin is not None:
                outcome.reject("duplicate", f"{outcome.source}: the same photo as {twin.source}; one copy is enough")
            else:
                hashes.append((found.photo_hash, outcome))
                outcome.status, outcome.message = "kept", "kept"
        if found.crop is not None:  # the crop goes to disk (only one that may still be used) and leaves memory
            crop = Image.fromarray(found.crop)
            outcome.thumb = crop.copy()
            outcome.thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
            if outcome.status == "kept" or outcome.source in settings.keep:
                outcome.crop_path = folder.stage(crop, index)
            del crop, found
    report(len(entries), len(entries), "screening done")
    return outcomes


def _apply_keep(outcomes: list[PhotoOutcome], keep: set[str], warnings: list[str]) -> None:
    for outcome in outcomes:
        if outcome.source not in keep or outcome.status != "rejected":
            continue
        if outcome.crop_path is None:
            warnings.append(f"{outcome.source} cannot be kept: {outcome.message}")
            continue
        outcome.overridden = {"reason": outcome.reason, "message": outcome.message}
        outcome.status, outcome.reason, outcome.message = "kept", None, "kept at your request despite screening"


def _reference_embeddings(photos: list[Photo], analyzer, settings: PrepareSettings) -> list[np.ndarray]:
    embeddings = []
    for photo in photos:
        # searched as the photos are: a narrow face in a large photo on a larger copy
        upright = find_upright(photo.image, analyzer, settings.detect_side, screening=True)
        upright = look_closer(photo, upright, analyzer, settings)[1]
        subject, _ = pick_subject(upright.faces)
        if subject is None:
            raise HeadshotError(
                f"--reference photo {photo.source.name}: no face found; pin a clear photo of the person",
                "bad_reference",
            )
        embeddings.append(upright.embed(subject))
    return embeddings


def _screen_identity(outcomes: list[PhotoOutcome], analyzer, reference, warnings: list[str]) -> None:
    candidates = {o.source: o.embedding for o in outcomes if o.status == "kept" and o.embedding is not None}
    center, distances = identity_consensus(candidates, analyzer, reference)
    if center is None:
        if len(candidates) >= 2:
            warnings.append(
                "no two photos look like the same person, so nobody was set aside as a different person; "
                "check the photos, or pin one with --reference"
            )
        return
    limit = analyzer.same_person_distance
    for outcome in outcomes:
        if outcome.source not in distances:
            continue
        outcome.details["identity_distance"] = round(distances[outcome.source], 4)
        if distances[outcome.source] >= limit:
            whose = "your reference photo" if reference else "the rest of the set"
            outcome.reject(
                "different_person",
                f"{outcome.source}: looks like a different person than {whose} "
                f"(distance {distances[outcome.source]:.2f}, same person below {limit:.2f}); "
                "remove it, or pin a reference photo with --reference if the set picked the wrong person",
            )


def _detect_class(kept: list[PhotoOutcome], analyzer, warnings: list[str]) -> str:
    """Majority vote of the backend's class model over the kept crops; 'person' without one."""
    votes: Counter[str] = Counter()
    for outcome in kept:
        rgb = np.asarray(outcome.crop)
        faces = analyzer.detect(rgb)
        guess = analyzer.estimate_class(rgb, faces[0]) if faces else None
        if faces and guess is None:
            break  # this backend has no class model: asking the other crops changes nothing
        if guess:
            votes[guess] += 1
    if votes:
        return votes.most_common(1)[0][0]
    warnings.append(
        f"class word not given and the {analyzer.name} backend cannot tell it: using '{DEFAULT_CLASS}' (set --class)"
    )
    return DEFAULT_CLASS


def _caption(kept, settings: PrepareSettings, class_word: str, tagger, rules, report: Progress) -> None:
    for index, outcome in enumerate(kept):
        kept_tags: list[str] = []
        if tagger is not None:
            report(index, len(kept), f"tagging {outcome.source}")
            kept_tags, removed = clean_tags(tagger.tag(outcome.crop), rules)
            outcome.details["tags_removed"] = [{"tag": t, "reason": r} for t, r in removed]
        outcome.caption = build_caption(settings.trigger, class_word, kept_tags)
        outcome.details["tagger"] = tagger.name if tagger is not None else "none"
