"""Face analysis: one interface (`FaceAnalyzer`), two backends (insightface ONNX, dlib)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import BackendUnavailable
from .base import Face, FaceAnalyzer, cosine_distance

BACKENDS = ("auto", "insightface", "dlib")

__all__ = ["BACKENDS", "Face", "FaceAnalyzer", "cosine_distance", "load_face_analyzer"]


def load_face_analyzer(backend: str = "auto", model_dirs: Iterable[str | Path] = ()) -> FaceAnalyzer:
    """The analyzer for `backend`; `auto` prefers insightface when its buffalo_l files are found.

    `model_dirs` are the host's folders to look in (ComfyUI's models/insightface, A1111's
    models/insightface, or one a person names); insightface's own ~/.insightface is searched too.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown face backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("auto", "insightface"):
        from . import insightface_onnx

        dirs = [Path(d).expanduser() for d in model_dirs] + insightface_onnx.default_search_dirs()
        pack = insightface_onnx.find_model_pack(dirs)
        if pack is not None:
            return insightface_onnx.InsightFaceAnalyzer(pack)
        if backend == "insightface":
            searched = ", ".join(str(d) for d in dirs)
            raise BackendUnavailable(
                f"insightface model files not found (searched {searched}). Put the buffalo_l pack "
                f"({', '.join(insightface_onnx.REQUIRED_FILES + (insightface_onnx.GENDERAGE_FILE,))}) in "
                f"<models>/insightface/models/buffalo_l/, or use --face-backend dlib (works offline)"
            )
    from .dlib_backend import DlibFaceAnalyzer

    return DlibFaceAnalyzer()
