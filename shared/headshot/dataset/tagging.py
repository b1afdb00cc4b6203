"""Tagger models that suggest caption tags, WD14 (SmilingWolf) and DeepDanbooru, and the registry
that finds one on disk. What a tag is, and a host's own tagger, live in `tags`.

onnxruntime is imported inside the constructors: importing this module must stay cheap and work
where onnxruntime is not installed (the caller then writes template captions).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from ..errors import BackendUnavailable, HeadshotError
from .tags import CHARACTER, GENERAL, RATING, Tag, Tagger, _by_score, tag_display_name

WD14_FILES = ("model.onnx", "selected_tags.csv")
WD14_SOURCE = (
    "SmilingWolf/wd-v1-4-moat-tagger-v2 on Hugging Face (or any SmilingWolf wd-v1-4 / wd-*-v3 "
    "tagger): model.onnx and selected_tags.csv"
)
DD_TAGS_FILE = "tags.txt"
DD_SOURCE = (
    "an ONNX export of DeepDanbooru (KichangKim/DeepDanbooru v3/v4 release, converted with "
    "tf2onnx): one .onnx file plus the release's tags.txt (tags-character.txt and "
    "tags-general.txt are optional and give categories)"
)

# selected_tags.csv category codes
_WD14_CATEGORIES = {"9": RATING, "4": CHARACTER, "0": GENERAL}


# --- onnxruntime plumbing -------------------------------------------------------------------


def _default_providers(available: list[str]) -> list[str]:
    # Explicit list: GPU builds of onnxruntime refuse a session without one. TensorRT is left
    # out on purpose, its engine build takes minutes for a one-off tagging pass.
    preferred = (
        "CUDAExecutionProvider",
        "ROCMExecutionProvider",
        "DmlExecutionProvider",
        "CoreMLExecutionProvider",
        "CPUExecutionProvider",
    )
    chosen = [p for p in preferred if p in available]
    return chosen or available


def _open_session(model_path: Path, providers: list[str] | None, source: str):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailable(
            f"Tagging needs onnxruntime, which is not installed ({e}). "
            "Install it with: pip install onnxruntime  (or onnxruntime-gpu)."
        ) from e
    if providers is None:
        providers = _default_providers(ort.get_available_providers())
    try:
        return ort.InferenceSession(str(model_path), providers=providers)
    except Exception as e:  # onnxruntime raises its own untyped errors for bad files
        raise BackendUnavailable(
            f"onnxruntime cannot load the tagger model {model_path}: {e}. The file may be "
            f"incomplete (an interrupted download, or a Git LFS pointer instead of the model); "
            f"download it again from {source}."
        ) from e


def _nhwc_input(session, model_path: Path, default_size: int) -> tuple[str, int]:
    """Input name and square side of an NHWC image input, read from the model itself."""
    inp = session.get_inputs()[0]
    shape = list(inp.shape)  # ints, or str/None for dynamic dims
    if len(shape) != 4 or (isinstance(shape[3], int) and shape[3] != 3):
        raise BackendUnavailable(
            f"{model_path} does not look like an image tagger: its input {inp.name!r} has shape "
            f"{shape}, expected [batch, height, width, 3]."
        )
    h, w = shape[1], shape[2]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        if h != w:
            raise BackendUnavailable(f"{model_path}: expected a square input, got {h}x{w}.")
        return inp.name, h
    return inp.name, default_size  # dynamic spatial dims: use the family's usual size


def _check_output_width(session, model_path: Path, n_labels: int, labels_file: Path) -> None:
    width = session.get_outputs()[0].shape[-1]
    if isinstance(width, int) and width > 0 and width != n_labels:
        raise BackendUnavailable(
            f"{model_path} gives {width} scores but {labels_file} lists {n_labels} tags: the two "
            "files come from different models. Put the matching pair in the folder."
        )


def _run(session, input_name: str, pixels: np.ndarray) -> np.ndarray:
    return np.asarray(session.run(None, {input_name: pixels[None]})[0][0], dtype=np.float32)


# --- WD14 -----------------------------------------------------------------------------------


def wd14_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """As kohya sd-scripts' tag_images_by_wd14_tagger.py: BGR, white-padded centred square,
    resized to `size` (area when shrinking, lanczos when enlarging), float32 0..255, HWC."""
    rgb = np.asarray(image.convert("RGB"))
    bgr = rgb[:, :, ::-1]
    side = max(bgr.shape[:2])
    pad_y, pad_x = side - bgr.shape[0], side - bgr.shape[1]
    top, left = pad_y // 2, pad_x // 2
    square = np.pad(bgr, ((top, pad_y - top), (left, pad_x - left), (0, 0)), mode="constant", constant_values=255)
    if side != size:
        # PIL BOX is area averaging, the cv2.INTER_AREA the script asks for; no cv2 dependency.
        resample = Image.Resampling.BOX if side > size else Image.Resampling.LANCZOS
        square = np.asarray(Image.fromarray(np.ascontiguousarray(square)).resize((size, size), resample))
    return square.astype(np.float32)


def _read_selected_tags(csv_path: Path) -> list[tuple[str, str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BackendUnavailable(f"Cannot read {csv_path}: {e}") from e
    if not rows or "name" not in rows[0] or "category" not in rows[0]:
        raise BackendUnavailable(
            f"{csv_path} is not a WD14 selected_tags.csv (expected columns tag_id,name,category,count)."
        )
    # Categories other than rating/character (none in the released files) count as general.
    return [(row["name"], _WD14_CATEGORIES.get(str(row["category"]).strip(), GENERAL)) for row in rows]


class WD14Tagger:
    """SmilingWolf's WD taggers (wd-v1-4-*, wd-*-v3): `model.onnx` + `selected_tags.csv`."""

    def __init__(
        self,
        model_dir: str | Path,
        general_threshold: float = 0.35,
        character_threshold: float = 0.85,
        providers: list[str] | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.name = f"wd14:{self.model_dir.name}"
        self.general_threshold = general_threshold
        self.character_threshold = character_threshold
        missing = [f for f in WD14_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise BackendUnavailable(
                f"{self.model_dir} lacks {', '.join(missing)}; a WD14 tagger folder needs {WD14_SOURCE}."
            )
        model_path, csv_path = (self.model_dir / f for f in WD14_FILES)
        labels = _read_selected_tags(csv_path)
        self._names = [tag_display_name(name) for name, _ in labels]
        self._categories = [category for _, category in labels]
        self._session = _open_session(model_path, providers, WD14_SOURCE)
        self._input_name, self.input_size = _nhwc_input(self._session, model_path, 448)
        _check_output_width(self._session, model_path, len(labels), csv_path)

    def tag(self, image: Image.Image) -> list[Tag]:
        probs = _run(self._session, self._input_name, wd14_preprocess(image, self.input_size))
        tags: list[Tag] = []
        ratings = [i for i, c in enumerate(self._categories) if c == RATING]
        if ratings:  # exactly one rating, the most likely, as sd-scripts does
            best = max(ratings, key=lambda i: probs[i])
            tags.append(Tag(self._names[best], float(probs[best]), RATING))
        thresholds = {GENERAL: self.general_threshold, CHARACTER: self.character_threshold}
        tags += [
            Tag(n, float(p), c)
            for n, p, c in zip(self._names, probs, self._categories)
            if c in thresholds and p >= thresholds[c]
        ]
        return _by_score(tags)


# --- DeepDanbooru ---------------------------------------------------------------------------


def deepdanbooru_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """As DeepDanbooru's own evaluate: fit inside `size` keeping aspect (area resampling),
    centre, pad by repeating the edge pixels, RGB float32 0..1, HWC."""
    rgb = image.convert("RGB")
    scale = size / max(rgb.size)
    w, h = (max(1, min(size, round(d * scale))) for d in rgb.size)
    if (w, h) != rgb.size:
        rgb = rgb.resize((w, h), Image.Resampling.BOX)
    pixels = np.asarray(rgb)
    pad_y, pad_x = size - h, size - w
    top, left = pad_y // 2, pad_x // 2
    pixels = np.pad(pixels, ((top, pad_y - top), (left, pad_x - left), (0, 0)), mode="edge")
    return pixels.astype(np.float32) / 255.0


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise BackendUnavailable(f"Cannot read {path}: {e}") from e


def _deepdanbooru_onnx(model_dir: Path) -> Path | None:
    candidates = sorted(model_dir.glob("*.onnx"))
    if not candidates:
        return None
    named = [p for p in candidates if p.name in ("model.onnx", "deepdanbooru.onnx")]
    return (named or candidates)[0]


class DeepDanbooruTagger:
    """An ONNX export of DeepDanbooru: one `*.onnx` plus `tags.txt` (one tag per output)."""

    def __init__(self, model_dir: str | Path, threshold: float = 0.5, providers: list[str] | None = None):
        self.model_dir = Path(model_dir)
        self.name = f"deepdanbooru:{self.model_dir.name}"
        self.threshold = threshold
        tags_path = self.model_dir / DD_TAGS_FILE
        model_path = _deepdanbooru_onnx(self.model_dir)
        if model_path is None or not tags_path.is_file():
            raise BackendUnavailable(
                f"{self.model_dir} lacks {'an .onnx file' if model_path is None else DD_TAGS_FILE}; "
                f"a DeepDanbooru folder needs {DD_SOURCE}."
            )
        raw = _read_lines(tags_path)
        characters = self._optional_set("tags-character.txt")
        self._names = [tag_display_name(t) for t in raw]
        self._categories = [
            RATING if t.startswith("rating:") else CHARACTER if t in characters else GENERAL for t in raw
        ]
        self._session = _open_session(model_path, providers, DD_SOURCE)
        self._input_name, self.input_size = _nhwc_input(self._session, model_path, 512)
        _check_output_width(self._session, model_path, len(raw), tags_path)

    def _optional_set(self, filename: str) -> frozenset[str]:
        path = self.model_dir / filename
        return frozenset(_read_lines(path)) if path.is_file() else frozenset()

    def tag(self, image: Image.Image) -> list[Tag]:
        probs = _run(self._session, self._input_name, deepdanbooru_preprocess(image, self.input_size))
        tags: list[Tag] = []
        ratings = [i for i, c in enumerate(self._categories) if c == RATING]
        if ratings:  # the rating outputs are independent sigmoids; report only the likeliest
            best = max(ratings, key=lambda i: probs[i])
            tags.append(Tag(self._names[best], float(probs[best]), RATING))
        tags += [
            Tag(n, float(p), c)
            for n, p, c in zip(self._names, probs, self._categories)
            if c != RATING and p >= self.threshold
        ]
        return _by_score(tags)


# --- finding a model on disk: the registry ----------------------------------------------------


@dataclass(frozen=True)
class TaggerKind:
    """How to recognise one kind of tagger's model folder, open it, and say what it needs."""

    is_model_dir: Callable[[Path], bool]
    open: Callable[..., Tagger]  # (folder, providers=...) -> Tagger
    needs: str  # what the folder must hold, for the "not found" message
    example: str  # a folder name to suggest


def _is_wd14_dir(d: Path) -> bool:
    return all((d / f).is_file() for f in WD14_FILES)


def _is_deepdanbooru_dir(d: Path) -> bool:
    return (d / DD_TAGS_FILE).is_file() and _deepdanbooru_onnx(d) is not None


#: kind -> how to find it; "auto" takes the first kind in this order whose folder is found
TAGGERS: dict[str, TaggerKind] = {
    "wd14": TaggerKind(
        _is_wd14_dir,
        WD14Tagger,
        f"a folder with {' and '.join(WD14_FILES)}, from {WD14_SOURCE}",
        "wd-v1-4-moat-tagger-v2",
    ),
    "deepdanbooru": TaggerKind(_is_deepdanbooru_dir, DeepDanbooruTagger, f"a folder with {DD_SOURCE}", "deepdanbooru"),
}


def tagger_choices() -> tuple[str, ...]:
    """What a tagger option accepts: "auto", every registered kind, "none"."""
    return ("auto", *TAGGERS, "none")


def _candidate_dirs(search_dirs: list[Path]) -> Iterable[Path]:
    """Each search dir itself, then its direct subfolders in name order."""
    for d in search_dirs:
        if not d.is_dir():
            continue
        yield d
        try:
            yield from sorted(p for p in d.iterdir() if p.is_dir())
        except OSError:
            continue


def _not_found(kind: str, search_dirs: list[Path]) -> BackendUnavailable:
    looked = "; ".join(f"{d}{'' if d.is_dir() else ' (does not exist)'}" for d in search_dirs) or "(no folders given)"
    where = f" Put it in e.g. {search_dirs[0] / TAGGERS[kind].example}." if search_dirs else ""
    return BackendUnavailable(
        f"No {kind} tagger found. Looked in these folders and their direct subfolders: {looked}. "
        f"Needed: {TAGGERS[kind].needs}.{where}"
    )


def find_tagger(kind: str, search_dirs: Iterable[str | Path], *, providers: list[str] | None = None) -> Tagger | None:
    """The tagger `kind` asks for, from the first matching model folder in `search_dirs`.

    "auto" tries TAGGERS in order (WD14, then DeepDanbooru) and returns None when none is there (the
    caller falls back to template captions); an explicit kind that is missing raises BackendUnavailable.
    """
    kind = kind.strip().lower()
    if kind not in tagger_choices():
        raise HeadshotError(f"Unknown tagger {kind!r}; choose one of {', '.join(tagger_choices())}.", code="bad_option")
    if kind == "none":
        return None
    dirs = [Path(d) for d in search_dirs]
    for name in TAGGERS if kind == "auto" else [kind]:
        found = next((d for d in _candidate_dirs(dirs) if TAGGERS[name].is_model_dir(d)), None)
        if found is not None:
            return TAGGERS[name].open(found, providers=providers)
    if kind != "auto":
        raise _not_found(kind, dirs)
    return None
