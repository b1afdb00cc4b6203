"""dlib backend: HOG detector, 5-point landmarks and the 128-d ResNet embedding, fully offline.

The model files come from the `face_recognition_models` package; nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable
from .base import Face
from .subject import RIVAL_WIDTH_SHARE

# Below this HOG score a detection is usually a hand, a collar or a pattern, not a face.
MIN_DETECTION_SCORE = 0.05
# dlib's HOG window: without upsampling, smaller faces are not found
HOG_WINDOW_PX = 80
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
ENCODER_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def _model_files_folder() -> Path:
    """The model folder of face_recognition_models, found without importing the package: its
    __init__ imports pkg_resources, which setuptools 81+ no longer ships."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = spec.submodule_search_locations if spec else None
    folder = Path(list(locations)[0]) / "models" if locations else None
    if folder is None or not (folder / LANDMARKS_FILE).is_file():
        raise BackendUnavailable("the dlib face backend needs its model files: pip install face_recognition_models")
    return folder


class DlibFaceAnalyzer:
    name = "dlib"
    # dlib's own verification threshold for its 128-d embedding (99.38% on LFW at 0.6)
    same_person_distance = 0.6

    def __init__(self, upsample: int = 1, detector_file: str | None = None):
        try:
            import dlib
        except ImportError:
            raise BackendUnavailable(
                "the dlib face backend needs dlib: pip install dlib-bin face_recognition_models "
                "(dlib-bin is a prebuilt wheel; no compiler needed)"
            ) from None
        self._models = _model_files_folder()
        self._dlib = dlib
        self.upsample = upsample
        self._detector_file = detector_file

    #: about the narrowest face `detect_as_is` finds, in pixels of the image searched
    as_is_face_px = HOG_WINDOW_PX

    @property
    def smallest_face_px(self) -> float:
        """About the narrowest face `detect` and `detect_screening` find, in pixels of the image searched."""
        return HOG_WINDOW_PX / 2 ** max(0, self.upsample)

    def detect_as_is(self, rgb: np.ndarray) -> list[Face]:
        """Faces searched without upsampling (a quarter of the cost): for a copy made large enough instead."""
        return self._detect(np.ascontiguousarray(rgb), 0)

    # each model is built on first use: a process that only compares embeddings (prepare's main process
    # while workers screen) skips the detector's half second of deserialising
    @functools.cached_property
    def _detector(self):
        if self._detector_file is not None:
            return self._dlib.fhog_object_detector(self._detector_file)
        return self._dlib.get_frontal_face_detector()

    @property
    def model_files(self) -> tuple[Path, ...]:
        # a saved copy of the built-in detector detects what the built-in one does
        return (self._models / LANDMARKS_FILE, self._models / ENCODER_FILE)

    def share(self, folder: Path) -> dict:
        """Keywords that build this analyzer in a worker process, with the detector saved in `folder`:
        dlib rebuilds its built-in detector in about half a second and reads a saved copy in milliseconds."""
        path = folder / "dlib-frontal-face-detector.svm"
        self._detector.save(str(path))
        return {"upsample": self.upsample, "detector_file": str(path)}

    @functools.cached_property
    def _landmarks(self):
        return self._dlib.shape_predictor(str(self._models / LANDMARKS_FILE))

    @functools.cached_property
    def _encoder(self):
        return self._dlib.face_recognition_model_v1(str(self._models / ENCODER_FILE))

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces, largest first, searched as face_recognition does (upsampled `upsample` times)."""
        return self._detect(np.ascontiguousarray(rgb), self.upsample)

    def detect_screening(self, rgb: np.ndarray) -> list[Face]:
        """`detect` at a fraction of the cost, for screening photos: every face that could rival the largest
        (pick_subject), and with no face that large every face down to the HOG window over 2**upsample.
        Boxes (and so embeddings) can differ slightly from `detect`'s: likeness is measured with `detect`.

        Upsampling costs 4x per level, so the image is first searched as it is. When the largest face
        found is so small that a rival (RIVAL_WIDTH_SHARE of its width) could be narrower than the HOG
        window, the image is searched again enlarged just enough to see such a rival; when nothing is
        found, upsampled as configured.
        """
        rgb = np.ascontiguousarray(rgb)
        if self.upsample <= 0:
            return self._detect(rgb, 0)
        faces = self._detect(rgb, 0)
        if not faces:
            return self._detect(rgb, self.upsample)
        smallest_rival = faces[0].width * RIVAL_WIDTH_SHARE
        if smallest_rival >= HOG_WINDOW_PX:
            return faces
        enlarged = self._detect(rgb, 0, enlarge=min(HOG_WINDOW_PX / smallest_rival, 2.0**self.upsample))
        # a face the first pass found stays (a blurred face can drop below the score when enlarged)
        more = [f for f in enlarged if not any(_overlap(f, g) > 0.3 for g in faces)]
        return sorted(faces + more, key=lambda f: f.width * f.height, reverse=True)

    def _detect(self, rgb: np.ndarray, upsample: int, enlarge: float = 1.0) -> list[Face]:
        """Detections on `rgb` (enlarged by `enlarge` for the search only), landmarks on `rgb` itself."""
        searched = rgb
        if enlarge != 1.0:
            from PIL import Image

            size = (round(rgb.shape[1] * enlarge), round(rgb.shape[0] * enlarge))
            searched = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        rects, scores, _ = self._detector.run(searched, upsample, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            if score < MIN_DETECTION_SCORE:
                continue
            if enlarge != 1.0:
                rect = self._dlib.rectangle(
                    *(int(round(v / enlarge)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
                )
            shape = self._landmarks(rgb, rect)
            pts = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
            # 5-point model: 0,1 = corners of the eye on the image's right; 2,3 = the left one; 4 = nose
            eyes = np.stack([pts[2:4].mean(0), pts[0:2].mean(0)])
            box = (float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1))
            faces.append(Face(box=box, score=float(score), eyes=eyes, keypoints=pts))
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        rgb = np.ascontiguousarray(rgb)
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        shape = self._landmarks(rgb, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return np.asarray(self._encoder.compute_face_descriptor(rgb, shape), np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))

    def estimate_class(self, rgb: np.ndarray, face: Face) -> str | None:
        return None  # dlib ships no gender model


def _overlap(a: Face, b: Face) -> float:
    """Intersection over union of two face boxes."""
    x0, y0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    x1, y1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def open_analyzer(model_dirs, required: bool, cpu_only: bool = False) -> DlibFaceAnalyzer:
    """dlib needs no model folder (its files ship in face_recognition_models): always opened. `cpu_only` changes
    nothing: dlib-bin runs on the CPU, and a dlib compiled with CUDA cannot be told to leave the GPU."""
    return DlibFaceAnalyzer()
