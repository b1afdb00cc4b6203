"""Photos → dataset: uploads or a folder into the core's prepare, the kept and rejected photos with their
reasons, and captions a person edits before training."""

from __future__ import annotations

import shutil
from pathlib import Path

from headshot.errors import HeadshotError
from headshot.outputs import atomic_write_text, safe_name

from . import host

_analyzers: dict[str, object] = {}


def face_analyzer(backend: str):
    """The core's face analyzer for `backend` (models/insightface searched), kept loaded."""
    from headshot.faces import load_face_analyzer

    if backend not in _analyzers:
        _analyzers[backend] = load_face_analyzer(backend, host.face_model_dirs())
    return _analyzers[backend]


def release_face_analyzers() -> None:
    """Drop the kept analyzers (the next use loads its own again): an onnxruntime CUDA session holds its arena on
    the card for as long as it lives, which a training worker on the same card needs."""
    _analyzers.clear()


def face_backend_note(backend: str = "auto") -> tuple[bool, str]:
    """(True, "") when a face backend loads, else (False, why): prepare, ranking and the detailer need one."""
    try:
        face_analyzer(backend)
    except HeadshotError as exc:
        return False, str(exc)
    return True, ""


def typed_folder(text: str, what: str = "photos folder") -> Path:
    """A folder typed in the tab or a request, confined to the WebUI's folders (headshot.allowed_paths)."""
    from headshot.allowed_paths import confined_existing

    return confined_existing(
        text,
        what,
        host.allowed_roots(),
        "the WebUI",
        [host.outputs_dir(), host.data_dir()],
        "folder",
        " (relative paths are looked up in the WebUI's outputs folder, then its own folder)",
    )


def upload_path(item) -> Path:
    """A gradio upload as a path: gradio 3.41 gives a tempfile wrapper (.name), gradio 4 a str or FileData."""
    name = getattr(item, "name", None) or getattr(item, "path", None) or item
    return Path(str(name))


def store_uploads(files, dataset_name: str) -> Path:
    """Copy uploaded photos into <jobs>/photos/<dataset_name>/; a name already there gets -2, -3… (nothing replaced)."""
    folder = host.jobs_root() / "photos" / safe_name(dataset_name, "dataset name")
    folder.mkdir(parents=True, exist_ok=True)
    for item in files or []:
        source = upload_path(item)
        stem, suffix = Path(source.name).stem, Path(source.name).suffix
        target, n = folder / source.name, 1
        while target.exists() or target.is_symlink():
            n += 1
            target = folder / f"{stem}-{n}{suffix}"
        shutil.copyfile(source, target)
    return folder


def dataset_dir(name: str) -> Path:
    return host.jobs_root() / "datasets" / safe_name((name or "").strip(), "dataset name")


def prepare(
    source: Path, dataset_name: str, trigger: str, class_word: str, resolution: int, backend: str, progress=None
):
    """The core's prepare from `source` into the named dataset; returns its PrepareResult."""
    from headshot.dataset.prepare import prepare_dataset
    from headshot.dataset.prepare_settings import PrepareSettings

    settings = PrepareSettings(
        trigger=safe_name(trigger.strip(), "trigger"),
        class_word=safe_name(class_word.strip(), "class word") if class_word.strip() else None,
        resolution=int(resolution),
        face_backend=backend,
        face_model_dirs=host.face_model_dirs(),
        tagger="none",
    )
    return prepare_dataset(
        source, dataset_dir(dataset_name), settings, analyzer=face_analyzer(backend), progress=progress
    )


def gallery(result, source: Path) -> list[tuple[str, str]]:
    """(picture, caption) for each photo: kept ones as their training crop with the caption, rejected ones as the
    photo itself (when it can be shown) with the reason."""
    from PIL import Image

    items = []
    for photo in result.photos:
        if photo.status == "kept" and photo.image:
            items.append((str(result.out_dir / photo.image), f"kept: {photo.caption}"))
            continue
        picture = source / photo.source
        try:
            with Image.open(picture) as img:
                img.verify()
        except Exception:
            continue  # the summary still lists it with its reason
        items.append((str(picture), f"rejected ({photo.reason}): {photo.message}"))
    return items


def _subset(dataset: Path) -> tuple[Path, str]:
    from headshot.dataset.kohya import parse_subset_folder

    for folder in sorted((dataset / "img").iterdir()) if (dataset / "img").is_dir() else []:
        parsed = parse_subset_folder(folder.name)
        if folder.is_dir() and parsed is not None:
            return folder, parsed[1].split(" ")[0]
    raise HeadshotError(f"{dataset} holds no prepared images; run Prepare first", "no_dataset")


def captions(dataset: Path) -> list[list[str]]:
    """[image name, caption] for every training image of the dataset."""
    subset, _ = _subset(dataset)
    rows = []
    for image in sorted(p for p in subset.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")):
        text = image.with_suffix(".txt")
        rows.append([image.name, text.read_text(encoding="utf-8").strip() if text.is_file() else ""])
    return rows


def save_captions(dataset: Path, rows) -> int:
    """Write edited captions to the images' .txt files (atomically); each must still hold the trigger word, or
    the LoRA would learn the person without it. Returns how many changed."""
    subset, trigger = _subset(dataset)
    changed = 0
    for row in rows or []:
        if not row or not str(row[0]).strip():
            continue
        name, caption = safe_name(str(row[0]).strip(), "caption's image"), " ".join(str(row[1]).split())
        image = subset / name
        if not image.is_file():
            raise HeadshotError(f"{name} is not an image of this dataset; edit captions only, not names", "not_found")
        if trigger not in caption.replace(",", " ").split():
            raise HeadshotError(
                f"the caption of {name} lost the trigger word {trigger!r}; put it back (the LoRA ties the "
                "person to it)",
                "invalid_trigger",
            )
        text = image.with_suffix(".txt")
        if not text.is_file() or text.read_text(encoding="utf-8").strip() != caption:
            atomic_write_text(text, caption + "\n")
            changed += 1
    return changed
