"""Small things every node module shares: the category, common inputs, the face analyzer."""

from __future__ import annotations

from pathlib import Path

from . import host

CATEGORY = "Headshot Studio"

_analyzers: dict[str, object] = {}


def face_backend_input() -> tuple:
    from headshot.faces import face_backend_choices

    return (
        list(face_backend_choices()),
        {
            "default": "auto",
            "tooltip": "Face detection and identity model. insightface needs the buffalo_l ONNX files in "
            "models/insightface/models/buffalo_l; dlib works offline out of the box; auto picks "
            "insightface when its files are there.",
        },
    )


def face_analyzer(backend: str):
    """The core's face analyzer for `backend`, searching ComfyUI's models/insightface (kept loaded)."""
    from headshot.faces import load_face_analyzer

    if backend not in _analyzers:
        _analyzers[backend] = load_face_analyzer(backend, host.folder_dirs("insightface"))
    return _analyzers[backend]


def release_face_analyzers() -> None:
    """Drop the kept analyzers (the next face node loads its own again): an onnxruntime CUDA session holds its
    arena on the card for as long as it lives, which a training worker on the same card needs."""
    _analyzers.clear()


def resolve_folder(text: str, widget: str) -> Path:
    """The folder a widget names, checked against the folders the pack may use (see paths.py)."""
    from .paths import user_path

    return user_path(text, widget, "folder")


def folder_listing(folder: Path) -> list:
    """(name, size, mtime) of every file in `folder`: changes when a photo is added, removed or edited."""
    if not folder.is_dir():
        return []
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()]


def split_names(text: str) -> list[str]:
    """File names from a comma- or line-separated text."""
    return [n.strip() for n in (text or "").replace(",", "\n").splitlines() if n.strip()]
