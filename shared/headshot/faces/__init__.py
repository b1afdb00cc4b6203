"""Face analysis: one interface (`FaceAnalyzer`), backends in one registry (`FACE_BACKENDS`).

A backend is one module with `open_analyzer(model_dirs, required, cpu_only=False)` and one line in FACE_BACKENDS.
Its module is imported only when that backend is asked for: a missing optional library disables
that backend, never the package.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Iterable, Protocol

from ..errors import BackendUnavailable, HeadshotError
from .base import Face, FaceAnalyzer, cosine_distance


class OpenAnalyzer(Protocol):
    """(model_dirs, required, cpu_only) -> the analyzer; None when not required and its model files are not there.
    `cpu_only`: never on a GPU, where a backend could choose (see `load_face_analyzer`)."""

    def __call__(self, model_dirs: list[Path], required: bool, cpu_only: bool = False) -> FaceAnalyzer | None: ...


def _module_backend(module: str) -> OpenAnalyzer:
    def open_analyzer(model_dirs: list[Path], required: bool, cpu_only: bool = False):
        return importlib.import_module(module, __name__).open_analyzer(model_dirs, required, cpu_only)

    return open_analyzer


#: name -> how to open it; "auto" takes the first in this order that finds its files
FACE_BACKENDS: dict[str, OpenAnalyzer] = {
    "insightface": _module_backend(".insightface_onnx"),
    "dlib": _module_backend(".dlib_backend"),  # offline, always there: keep it last
}

__all__ = ["FACE_BACKENDS", "Face", "FaceAnalyzer", "cosine_distance", "face_backend_choices", "load_face_analyzer"]


def face_backend_choices() -> tuple[str, ...]:
    """What a face-backend option accepts: "auto", then every registered backend."""
    return ("auto", *FACE_BACKENDS)


def load_face_analyzer(
    backend: str = "auto", model_dirs: Iterable[str | Path] = (), cpu_only: bool = False
) -> FaceAnalyzer:
    """The analyzer for `backend`; `auto` prefers insightface when its buffalo_l files are found.

    `model_dirs` are the host's folders to look in (ComfyUI's models/insightface, A1111's
    models/insightface, or one a person names); insightface's own ~/.insightface is searched too.
    `cpu_only` keeps it off the GPU where something else needs the card's memory (training): onnxruntime's
    CUDA sessions keep what they allocated in an arena of their own for as long as they live.
    """
    if backend not in face_backend_choices():
        raise HeadshotError(
            f"unknown face backend {backend!r}; choose one of {', '.join(face_backend_choices())}", "bad_option"
        )
    dirs = [Path(d).expanduser() for d in model_dirs]
    names = list(FACE_BACKENDS) if backend == "auto" else [backend]
    for name in names:
        analyzer = FACE_BACKENDS[name](dirs, backend != "auto", cpu_only)
        if analyzer is not None:
            return analyzer
    raise BackendUnavailable(
        f"no face backend found its model files (tried {', '.join(names)}); "
        "install one of them or use --face-backend dlib (works offline)"
    )
