"""One photo -> a varied kohya dataset: the single-photo LoRA fallback.

Where no identity-adapter file is available, a LoRA trained on one photo is better than nothing, but
weaker than one trained on 10 photos: every picture it sees is the same moment (expression, clothes,
light). So the photo is screened exactly as prepare screens one (same checks, same reasons), then
framed several ways (tight face, headshot, head-and-shoulders, looser), mirrored and relit (warm/cool
white balance, brighter/dimmer, light from one side), so the LoRA learns the face rather than one
crop's pixels. Every variant is checked to still show a face the prepare stage detects; captions,
repeats, TOML, contact sheet and report are written by prepare's own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import HeadshotError
from ..faces import Face, FaceAnalyzer, load_face_analyzer
from ..faces.framing import find_upright, frame_headshot
from ..faces.subject import pick_subject
from ..outputs import FolderLock, check_writable
from ..photos import read_photo
from .captions import load_tag_rules
from .output_folder import DatasetFolder, write_dataset
from .photo_screen import examine_photo, look_closer
from .prepare import THUMB_SIDE, PhotoOutcome, PrepareResult, Progress, _caption, _detect_class, _quiet
from .prepare_settings import FACE_SHARE_RANGE, PrepareSettings
from .tagging import find_tagger

#: framings: (face share as a multiple of --face-share, crop centre below the face centre in face heights)
FRAMINGS = {
    "face": (1.4, 0.0),  # tight on the face: the detail of eyes, nose and mouth
    "headshot": (1.0, 0.1),  # prepare's own framing
    "shoulders": (0.66, 0.45),  # head and shoulders: the face sits in the upper half
    "loose": (0.5, 0.7),  # looser still: the face small, as in a wide generated picture
}


@dataclass(frozen=True)
class Variant:
    framing: str
    mirror: bool = False
    light: tuple[str, ...] = ()  # names in LIGHTS, applied in order

    @property
    def name(self) -> str:
        return "_".join([self.framing, *(["mirrored"] if self.mirror else []), *self.light])

    @property
    def description(self) -> str:
        parts = (
            [self.framing + " framing"] + (["mirrored"] if self.mirror else []) + [LIGHT_WORDS[n] for n in self.light]
        )
        return ", ".join(parts)


#: ten variants: every framing, half of them mirrored, most relit; the unchanged headshot is the first
#: headshot one and its mirror the next (a mirrored twin of each framing would teach little more)
VARIANTS = (
    Variant("face"),
    Variant("face", True, ("warm",)),
    Variant("headshot"),
    Variant("headshot", True),
    Variant("headshot", False, ("cool", "light_left")),
    Variant("headshot", True, ("dim",)),
    Variant("shoulders", False, ("bright",)),
    Variant("shoulders", True, ("light_right",)),
    Variant("shoulders", False, ("warm",)),
    Variant("loose", True, ("cool",)),
)

LIGHT_WORDS = {
    "warm": "warm white balance",
    "cool": "cool white balance",
    "bright": "brighter",
    "dim": "dimmer, more contrast",
    "light_left": "light from the left",
    "light_right": "light from the right",
}


def _gains(rgb: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    # white balance: red and blue move in opposite ways, as a colour-temperature change does
    return rgb * np.asarray(gains, np.float32)


def _tone(rgb: np.ndarray, gamma: float, contrast: float) -> np.ndarray:
    shaped = 255.0 * (np.clip(rgb, 0, 255) / 255.0) ** gamma
    return (shaped - 128.0) * contrast + 128.0


def _side_light(rgb: np.ndarray, from_left: bool) -> np.ndarray:
    # a soft directional light: a smooth gain across the picture, brighter on the lit side
    width = rgb.shape[1]
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, width, dtype=np.float32))  # 0 -> 1, eased
    gain = 1.2 - 0.45 * ramp if from_left else 0.75 + 0.45 * ramp
    return rgb * gain[None, :, None]


LIGHTS = {
    "warm": lambda rgb: _gains(rgb, (1.08, 1.0, 0.88)),
    "cool": lambda rgb: _gains(rgb, (0.9, 1.0, 1.1)),
    "bright": lambda rgb: _tone(rgb, 0.8, 0.92),
    "dim": lambda rgb: _tone(rgb, 1.25, 1.1),
    "light_left": lambda rgb: _side_light(rgb, True),
    "light_right": lambda rgb: _side_light(rgb, False),
}


def relit(image: Image.Image, light: tuple[str, ...]) -> Image.Image:
    """`image` with each named light change applied in order (deterministic; 8-bit RGB out)."""
    if not light:
        return image
    rgb = np.asarray(image.convert("RGB"), np.float32)
    for name in light:
        rgb = LIGHTS[name](rgb)
    return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))


def _lowered(face: Face, drop: float) -> Face:
    """The face moved down by `drop` face heights: framing around it puts the real face higher."""
    dy = drop * face.height
    x0, y0, x1, y1 = face.box
    shift = np.asarray([0.0, dy], np.float32)
    return Face((x0, y0 + dy, x1, y1 + dy), face.score, face.eyes + shift, face.keypoints + shift, face.embedding)


def make_variants(
    image: Image.Image, face: Face, resolution: int, face_share: float
) -> list[tuple[Variant, Image.Image]]:
    """The VARIANTS of the upright photo `image` around `face` (in its pixels), each `resolution` square."""
    low, high = FACE_SHARE_RANGE
    framed = {}
    for name, (share_factor, drop) in FRAMINGS.items():
        share = min(high, max(low, face_share * share_factor))
        framed[name], _ = frame_headshot(image, _lowered(face, drop), resolution, share)
    out = []
    for variant in VARIANTS:
        crop = framed[variant.framing]
        if variant.mirror:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append((variant, relit(crop, variant.light)))
    return out


def check_single_photo(photo: str | Path) -> Path:
    """The photo's path, or a HeadshotError saying what to give instead (nothing is read yet)."""
    path = Path(photo)
    if path.is_dir():
        raise HeadshotError(
            f"{path} is a folder; --single-photo takes one photo (for a folder of 3–20 photos, "
            "leave --single-photo out)",
            "bad_option",
        )
    if not path.is_file():
        raise HeadshotError(f"{path}: not found; give the path of one photo of the person", "not_found")
    return path


def prepare_single_photo(
    photo: str | Path,
    out_dir: str | Path,
    settings: PrepareSettings | None = None,
    analyzer: FaceAnalyzer | None = None,
    tagger=None,
    progress: Progress | None = None,
) -> PrepareResult:
    """Screen `photo` as prepare does, then write a dataset of its variants to `out_dir`.

    A photo prepare would reject (no face, several faces, face too small, blurry) is refused with
    prepare's reason and code before anything is written. The photo itself is only read.
    """
    settings = settings or PrepareSettings()
    settings.validate()
    if settings.keep or settings.reference:
        raise HeadshotError(
            "--keep and --reference work on a folder of photos; with --single-photo leave them out", "bad_option"
        )
    path, out_dir = check_single_photo(photo), Path(out_dir)
    rules = load_tag_rules(settings.tag_rules)
    report = progress or _quiet
    analyzer = analyzer or load_face_analyzer(settings.face_backend, settings.face_model_dirs)
    report(0, 3, f"screening {path.name}")
    screened = examine_photo(path, path.name, analyzer, settings)
    if screened.rejection is not None:
        code, message = screened.rejection
        raise HeadshotError(
            f"photo refused: {message} (one-photo training needs one clear face; nothing was written)", code
        )
    full = read_photo(path)
    # a face too narrow to find at detect_side is found on a larger copy, as screening found it
    upright = look_closer(full, find_upright(full.image, analyzer, settings.detect_side), analyzer, settings)[1]
    subject, _ = pick_subject(upright.faces)
    if subject is None:  # screening found it a moment ago: the file changed in between
        raise HeadshotError(
            f"photo refused: {path.name}: no face found; use a photo where the face is clearly visible", "no_face"
        )
    check_writable(out_dir, "--out")  # after screening: a refused photo leaves no folder behind
    report(1, 3, "making variants")
    variants = make_variants(upright.image.convert("RGB"), subject, settings.resolution, settings.face_share)
    del upright
    with FolderLock(out_dir, "dataset folder"), DatasetFolder(out_dir) as folder:
        folder.check_ownership()
        warnings: list[str] = []
        if tagger is None and settings.tagger != "none":
            tagger = find_tagger(settings.tagger, settings.tagger_dirs)
            if tagger is None:
                warnings.append("no tagger model found (WD14 or DeepDanbooru): captions are the trigger and class only")
        outcomes = [
            _outcome(path, variant, image, number, folder, analyzer) for number, (variant, image) in enumerate(variants)
        ]
        kept = [o for o in outcomes if o.status == "kept"]
        if not kept:
            raise HeadshotError(
                f"photo refused: {path.name}: no framing of it keeps a face the detector finds; use a sharper, "
                "closer photo (nothing was written)",
                "no_face",
            )
        lost = len(outcomes) - len(kept)
        if lost:
            warnings.append(f"{lost} of {len(outcomes)} variants lost the face and were left out (see the report)")
        warnings.append(
            f"one photo made {len(kept)} variants: the LoRA will be weaker than one trained on 10 photos "
            "(same expression, clothes and light); an identity-adapter file, where you have one, needs no training"
        )
        class_word = settings.class_word or _detect_class(kept, analyzer, warnings)
        _caption(kept, settings, class_word, tagger, rules, report)
        subset_dir = write_dataset(folder, outcomes, settings, class_word, warnings)
    for outcome in outcomes:
        if outcome.status != "kept":
            outcome.crop_path = None  # its staged crop went with the staging folder
    report(3, 3, "done")
    return PrepareResult(out_dir, outcomes, class_word, subset_dir, warnings)


def _outcome(
    path: Path, variant: Variant, image: Image.Image, number: int, folder: DatasetFolder, analyzer: FaceAnalyzer
) -> PhotoOutcome:
    outcome = PhotoOutcome(f"{path.stem}_{variant.name}")
    outcome.details.update(variant=variant.description, from_photo=path.name)
    outcome.thumb = image.copy()
    outcome.thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    if analyzer.detect(np.asarray(image)):
        outcome.status, outcome.message = "kept", "kept"
        outcome.crop_path = folder.stage(image, number)
    else:
        outcome.reject("no_face", f"{outcome.source}: the face was lost in this variant ({variant.description})")
    return outcome
