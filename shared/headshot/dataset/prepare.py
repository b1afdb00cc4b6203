"""Prepare: from a folder of selfies to a screened, captioned kohya dataset with a report."""
from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import HeadshotError, PhotoRejected
from ..faces import FaceAnalyzer, load_face_analyzer
from ..faces.framing import find_upright, frame_headshot
from ..photos import list_photos, read_photo
from . import kohya
from .captions import build_caption, clean_tags, load_tag_rules
from .contact_sheet import contact_sheet
from .screening import ScreeningSettings, difference_hash, face_sharpness, hamming, identity_consensus, pick_subject
from .tagging import find_tagger

REPORT_NAME = "report.json"
CONTACT_SHEET_NAME = "contact_sheet.jpg"
DATASET_TOML_NAME = "dataset.toml"
DEFAULT_CLASS = "person"

Progress = Callable[[int, int, str], None]


@dataclass
class PrepareSettings:
    trigger: str = "ohwx"
    class_word: str | None = None  # None: detected where a model allows, else "person"
    resolution: int = 512
    face_share: float = 1 / 3
    face_backend: str = "auto"
    face_model_dirs: list[Path] = field(default_factory=list)
    tagger: str = "auto"
    tagger_dirs: list[Path] = field(default_factory=list)
    tag_rules: Path | None = None
    repeats: int | None = None
    keep: set[str] = field(default_factory=set)  # file names to keep even when screening rejects them
    reference: list[Path] = field(default_factory=list)  # photos that define the identity
    min_face_px: int | None = None
    detect_side: int = 1024

    def validate(self) -> None:
        if not re.fullmatch(r"[\w\-]+", self.trigger):
            raise HeadshotError(f"trigger word {self.trigger!r} must be one word (letters, digits, - or _)", "bad_option")
        if self.resolution % 64 or not 256 <= self.resolution <= 2048:
            raise HeadshotError(f"resolution {self.resolution} must be a multiple of 64 between 256 and 2048", "bad_option")
        if self.class_word is not None and not self.class_word.strip():
            raise HeadshotError("class word is empty; give one such as man, woman or person", "bad_option")


@dataclass
class PhotoOutcome:
    source: str
    status: str = "rejected"
    reason: str | None = None
    message: str = ""
    image: str | None = None
    caption: str | None = None
    details: dict = field(default_factory=dict)
    # working state, not reported
    crop: Image.Image | None = None
    embedding: np.ndarray | None = None
    overridden: dict | None = None

    def reject(self, code: str, message: str) -> None:
        self.status, self.reason, self.message = "rejected", code, message

    def as_report(self) -> dict:
        entry = {"source": self.source, "status": self.status, "reason": self.reason, "message": self.message}
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
    Nothing in `input_dir` is modified.
    """
    settings = settings or PrepareSettings()
    settings.validate()
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    files = list_photos(input_dir)
    if not files:
        raise HeadshotError(f"{input_dir} holds no files; put 3–20 photos of one person in it", "no_photos")
    # models and rules first: a missing model file fails in a second, not after the screening
    analyzer = analyzer or load_face_analyzer(settings.face_backend, settings.face_model_dirs)
    warnings: list[str] = []
    if tagger is None and settings.tagger != "none":
        tagger = find_tagger(settings.tagger, settings.tagger_dirs)
        if tagger is None:
            warnings.append("no tagger model found (WD14 or DeepDanbooru): captions are the trigger and class only")
    rules = load_tag_rules(settings.tag_rules)
    screen = ScreeningSettings(settings.resolution, settings.face_share, settings.min_face_px)
    report = progress or (lambda done, total, message: None)

    outcomes: list[PhotoOutcome] = []
    hashes: list[tuple[np.ndarray, PhotoOutcome]] = []
    for index, path in enumerate(files):
        report(index, len(files), f"screening {path.name}")
        outcome = PhotoOutcome(path.name)
        outcomes.append(outcome)
        _screen_photo(path, outcome, analyzer, screen, settings, hashes)
    report(len(files), len(files), "screening done")

    reference = _reference_embeddings(settings.reference, analyzer, settings.detect_side)
    _screen_identity(outcomes, analyzer, reference, warnings)
    for outcome in outcomes:
        if outcome.status == "rejected" and outcome.source in settings.keep and outcome.crop is not None:
            outcome.overridden = {"reason": outcome.reason, "message": outcome.message}
            outcome.status, outcome.reason, outcome.message = "kept", None, "kept at your request despite screening"
    for name in settings.keep - {o.source for o in outcomes}:
        warnings.append(f"--keep {name}: no such photo in {input_dir}")
    for outcome in outcomes:
        if outcome.source in settings.keep and outcome.status == "rejected":
            warnings.append(f"{outcome.source} cannot be kept: {outcome.message}")

    kept = [o for o in outcomes if o.status == "kept"]
    class_word = settings.class_word or _detect_class(kept, analyzer, warnings)
    _caption(kept, settings, class_word, tagger, rules, report)
    subset_dir = _write_dataset(out_dir, outcomes, settings, class_word, warnings)
    result = PrepareResult(out_dir, outcomes, class_word, subset_dir, warnings)
    if not kept:
        reasons = Counter(o.reason for o in outcomes)
        summary = ", ".join(f"{n} {code}" for code, n in reasons.most_common())
        raise HeadshotError(
            f"no photo could be used ({summary}); see {out_dir / REPORT_NAME} for each photo's reason",
            "no_photos_kept",
        )
    return result


def _screen_photo(path, outcome, analyzer, screen: ScreeningSettings, settings: PrepareSettings, hashes) -> None:
    try:
        photo = read_photo(path)
    except PhotoRejected as exc:
        outcome.reject(exc.code, str(exc))
        return
    upright = find_upright(photo.image, analyzer, settings.detect_side)
    outcome.details["turned_degrees"] = upright.turned_degrees
    outcome.details["exif_rotated"] = photo.exif_rotated
    photo_hash = difference_hash(upright.image)
    subject, rivals = pick_subject(upright.faces)
    if subject is None:
        outcome.crop = _centre_square(upright.image, settings.resolution)  # only for --keep and the sheet
        outcome.reject("no_face", f"{path.name}: no face found; use a photo where the face is clearly visible")
        return
    outcome.embedding = upright.embed(subject)
    crop, framing = frame_headshot(upright.image, subject, settings.resolution, settings.face_share)
    outcome.crop = crop
    outcome.details.update(
        face_box=[round(v, 1) for v in subject.box],
        face_width_px=round(subject.width),
        roll_degrees=round(framing.roll_degrees, 1),
        filled_border=framing.padded,
    )
    if rivals:
        outcome.reject(
            "multiple_faces",
            f"{path.name}: {rivals + 1} faces of similar size; use a photo of the person alone "
            "(or crop it so their face is clearly the largest)",
        )
        return
    if subject.width < screen.min_face:
        outcome.reject(
            "face_too_small",
            f"{path.name}: face too small: {subject.width:.0f} px wide, need at least {screen.min_face} px; "
            "use a closer or higher-resolution photo",
        )
        return
    score = face_sharpness(crop, subject.width, screen)
    outcome.details["sharpness"] = round(score, 4)
    if score < screen.min_sharpness:
        outcome.reject(
            "blurry",
            f"{path.name}: the face is blurry (sharpness {score:.3f}, need {screen.min_sharpness:.3f}); "
            "use a photo in focus",
        )
        return
    for other_hash, other in hashes:
        if hamming(photo_hash, other_hash) <= screen.duplicate_bits:
            outcome.reject("duplicate", f"{path.name}: the same photo as {other.source}; one copy is enough")
            return
    hashes.append((photo_hash, outcome))
    outcome.status, outcome.message = "kept", "kept"


def _reference_embeddings(paths: list[Path], analyzer, detect_side: int) -> list[np.ndarray]:
    embeddings = []
    for path in paths:
        try:
            photo = read_photo(path)
        except PhotoRejected as exc:
            raise HeadshotError(f"reference photo {exc}", "bad_reference") from None
        upright = find_upright(photo.image, analyzer, detect_side)
        subject, _ = pick_subject(upright.faces)
        if subject is None:
            raise HeadshotError(f"reference photo {Path(path).name}: no face found; pin a clear photo of the person", "bad_reference")
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
    votes = Counter()
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


def _write_dataset(out_dir: Path, outcomes, settings: PrepareSettings, class_word: str, warnings) -> Path | None:
    """Write images, captions, TOML, report and sheet; earlier prepare output in out_dir is replaced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    image_root = out_dir / kohya.IMAGE_ROOT
    if image_root.exists():
        shutil.rmtree(image_root)
    kept = [o for o in outcomes if o.status == "kept"]
    subset_dir = None
    if kept:
        repeats = settings.repeats or kohya.default_repeats(len(kept))
        subset_dir = image_root / kohya.subset_folder_name(repeats, settings.trigger, class_word)
        subset_dir.mkdir(parents=True)
        for number, outcome in enumerate(kept, 1):
            stem = re.sub(r"[^\w\-]+", "_", Path(outcome.source).stem)[:60] or "photo"
            image_path = subset_dir / f"{number:02d}_{stem}.png"
            outcome.crop.save(image_path)
            image_path.with_suffix(kohya.CAPTION_EXTENSION).write_text(outcome.caption + "\n", encoding="utf-8")
            outcome.image = image_path.relative_to(out_dir).as_posix()
        toml = kohya.dataset_toml(subset_dir, f"{settings.trigger} {class_word}", repeats, settings.resolution)
        (out_dir / DATASET_TOML_NAME).write_text(toml, encoding="utf-8")
    elif (out_dir / DATASET_TOML_NAME).exists():
        (out_dir / DATASET_TOML_NAME).unlink()
    report = {
        "photos": [o.as_report() for o in outcomes],
        "summary": {
            "kept": len(kept),
            "rejected": len(outcomes) - len(kept),
            "reasons": dict(Counter(o.reason for o in outcomes if o.status == "rejected")),
        },
        "trigger": settings.trigger,
        "class": class_word,
        "resolution": settings.resolution,
        "dataset_dir": subset_dir.relative_to(out_dir).as_posix() if subset_dir else None,
        "dataset_toml": DATASET_TOML_NAME if kept else None,
        "warnings": warnings,
    }
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    notes = [o.caption if o.status == "kept" else o.message.removeprefix(f"{o.source}: ") for o in outcomes]
    sheet = contact_sheet([(o.crop, o.source, o.status == "kept", note or "") for o, note in zip(outcomes, notes)])
    sheet.save(out_dir / CONTACT_SHEET_NAME, quality=90)
    return subset_dir


def _centre_square(img: Image.Image, resolution: int) -> Image.Image:
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.resize((resolution, resolution), Image.LANCZOS, box=(left, top, left + side, top + side))

