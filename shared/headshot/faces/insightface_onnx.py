"""insightface "buffalo_l" backend, run straight through onnxruntime.

The `insightface` package itself is not imported: its builds drag in compilers and pinned
dependencies. The three model files are plain ONNX, so SCRFD decoding, ArcFace alignment
and the gender/age crop are re-implemented here with numpy and PIL, following insightface's
model_zoo/scrfd.py, utils/face_align.py and model_zoo/attribute.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BackendUnavailable
from .base import Face, cosine_distance

MODEL_PACK = "buffalo_l"
DETECTOR_FILE = "det_10g.onnx"  # SCRFD-10GF with 5 keypoints
RECOGNIZER_FILE = "w600k_r50.onnx"  # ArcFace R50, 512-d
GENDERAGE_FILE = "genderage.onnx"  # optional
REQUIRED_FILES = (DETECTOR_FILE, RECOGNIZER_FILE)

# Where ArcFace expects the 5 keypoints in its 112x112 input (insightface utils/face_align.py).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

# SCRFD layouts by output count: (strides, anchors per location). Only the keypoint
# variants are accepted, since alignment for embedding needs the 5 points.
_SCRFD_LAYOUTS = {9: ((8, 16, 32), 2), 15: ((8, 16, 32, 64, 128), 1)}


def default_search_dirs() -> list[Path]:
    """insightface's own download folders; hosts (ComfyUI, A1111) add theirs in front."""
    home = Path.home() / ".insightface"
    return [home / "models", home]


def find_model_pack(search_dirs: Iterable[str | Path]) -> Path | None:
    """The first folder holding both required files, trying D, D/buffalo_l, D/models/buffalo_l."""
    for d in search_dirs:
        d = Path(d).expanduser()
        for candidate in (d, d / MODEL_PACK, d / "models" / MODEL_PACK):
            if all((candidate / f).is_file() for f in REQUIRED_FILES):
                return candidate
    return None


def open_analyzer(model_dirs: Sequence[Path], required: bool, cpu_only: bool = False) -> InsightFaceAnalyzer | None:
    """The analyzer from the first buffalo_l pack found (host folders first, then ~/.insightface); on onnxruntime's
    CPU provider alone with `cpu_only`, else on CUDA where onnxruntime has it."""
    dirs = list(model_dirs) + default_search_dirs()
    pack = find_model_pack(dirs)
    if pack is not None:
        return InsightFaceAnalyzer(pack, providers=["CPUExecutionProvider"] if cpu_only else None)
    if not required:
        return None
    raise BackendUnavailable(
        f"insightface model files not found (searched {', '.join(str(d) for d in dirs)}). Put the buffalo_l pack "
        f"({', '.join(REQUIRED_FILES + (GENDERAGE_FILE,))}) in "
        f"<models>/insightface/models/buffalo_l/, or use --face-backend dlib (works offline)"
    )


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) taking src onto dst (Umeyama 1991).

    Same estimate as skimage's SimilarityTransform, which insightface's estimate_norm uses.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # keep a rotation, never a reflection
        d[1] = -1
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def warp_affine(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """`size`x`size` crop where output pixel p samples input at matrix^-1 p (cv2.warpAffine's meaning)."""
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))
    # cv2 puts pixel centres on integers, PIL on +0.5: shift in, map, shift back.
    half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    unhalf = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    coeffs = (half @ inverse @ unhalf)[:2].ravel()
    out = Image.fromarray(rgb).transform((size, size), Image.Transform.AFFINE, tuple(coeffs), Image.Resampling.BILINEAR)
    return np.asarray(out)


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices kept by greedy NMS, as scrfd.py does it (including its +1 pixel areas)."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return keep


def _anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """(height*width*anchors, 2) x, y of each anchor: row-major cells, anchors of a cell adjacent."""
    ys, xs = np.mgrid[:height, :width]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, anchors, axis=0)


def _unbatch(output: np.ndarray) -> np.ndarray:
    """Some SCRFD exports keep a batch axis ([1, N, C]); others give [N, C]."""
    return output[0] if output.ndim == 3 else output


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _fixed_hw(shape: Sequence) -> tuple[int, int] | None:
    """(height, width) when an NCHW input shape pins both, else None."""
    h, w = shape[2:4] if len(shape) >= 4 else (None, None)
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    return None


class InsightFaceAnalyzer:
    """SCRFD detection, ArcFace identity and (optionally) gender from a buffalo_l folder."""

    name = "insightface"
    # insightface's verification thresholds sit around 0.3-0.4 cosine similarity; we take 0.4.
    same_person_distance = 0.6

    def __init__(
        self,
        model_dir: str | Path,
        providers: Sequence[str] | None = None,
        det_size: int | tuple[int, int] = 640,
        det_threshold: float = 0.5,
        nms_threshold: float = 0.4,
    ):
        self.model_dir = Path(model_dir).expanduser()
        missing = [f for f in REQUIRED_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise BackendUnavailable(
                f"insightface model files missing in {self.model_dir}: {', '.join(missing)}. "
                f"Download the {MODEL_PACK} pack ({DETECTOR_FILE}, {RECOGNIZER_FILE}, {GENDERAGE_FILE}) "
                f"and put the files in {self.model_dir}."
            )
        try:
            import onnxruntime
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu)"
            ) from exc
        self._ort = onnxruntime
        if providers is None:
            providers = ["CPUExecutionProvider"]
            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
        self.providers = list(providers)
        self.det_threshold = det_threshold
        self.nms_threshold = nms_threshold

        self._det = self._load(self.model_dir / DETECTOR_FILE)
        det_input = self._det.get_inputs()[0]
        self._det_input = det_input.name
        n_outputs = len(self._det.get_outputs())
        if n_outputs not in _SCRFD_LAYOUTS:
            raise BackendUnavailable(
                f"{self.model_dir / DETECTOR_FILE} has {n_outputs} outputs; expected an SCRFD "
                f"detector with keypoints (9 or 15 outputs) such as the one in {MODEL_PACK}"
            )
        self._strides, self._anchors = _SCRFD_LAYOUTS[n_outputs]
        if isinstance(det_size, int):
            det_size = (det_size, det_size)
        # A model exported at a fixed size only runs at that size, whatever was asked for.
        self.det_hw = _fixed_hw(det_input.shape) or (int(det_size[1]), int(det_size[0]))

        self._rec = self._load(self.model_dir / RECOGNIZER_FILE)
        self._rec_input = self._rec.get_inputs()[0].name
        self._rec_size = (_fixed_hw(self._rec.get_inputs()[0].shape) or (112, 112))[0]

        self._genderage = None
        if (self.model_dir / GENDERAGE_FILE).is_file():
            self._genderage = self._load(self.model_dir / GENDERAGE_FILE)
            self._ga_input = self._genderage.get_inputs()[0].name
            self._ga_size = (_fixed_hw(self._genderage.get_inputs()[0].shape) or (96, 96))[0]

    @property
    def model_files(self) -> tuple[Path, ...]:
        return (self.model_dir / DETECTOR_FILE, self.model_dir / RECOGNIZER_FILE)

    def _load(self, path: Path):
        try:
            return self._ort.InferenceSession(str(path), providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise BackendUnavailable(
                f"{path} is not a valid ONNX model ({exc}). Download the {MODEL_PACK} pack "
                f"({DETECTOR_FILE}, {RECOGNIZER_FILE}, {GENDERAGE_FILE}) again and replace it."
            ) from exc

    # -- detection ---------------------------------------------------------------------------

    def detect(self, rgb: np.ndarray) -> list[Face]:
        rgb = _as_rgb(rgb)
        height, width = rgb.shape[:2]
        in_h, in_w = self.det_hw
        # Fit inside the canvas keeping the aspect ratio, top-left aligned (scrfd.py's rounding).
        if height / width > in_h / in_w:
            new_h, new_w = in_h, max(1, int(in_h / (height / width)))
        else:
            new_h, new_w = max(1, int(in_w * (height / width))), in_w
        det_scale = new_h / height
        # Plain bilinear without antialiasing, like the cv2.resize SCRFD is run with in insightface
        # (PIL's resize() would low-pass when shrinking and shift scores).
        resized = Image.fromarray(rgb).transform(
            (new_w, new_h),
            Image.Transform.AFFINE,
            (width / new_w, 0, 0, 0, height / new_h, 0),
            Image.Resampling.BILINEAR,
        )
        canvas = np.zeros((in_h, in_w, 3), np.uint8)
        canvas[:new_h, :new_w] = np.asarray(resized)
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self._det.run(None, {self._det_input: np.ascontiguousarray(blob)})

        scores, boxes, keypoints = self._decode(outputs, in_h, in_w)
        boxes /= det_scale
        keypoints /= det_scale
        keep = _nms(boxes, scores, self.nms_threshold)
        faces = [
            Face(
                box=(float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                score=float(scores[i]),
                eyes=keypoints[i, :2].copy(),
                keypoints=keypoints[i].copy(),
            )
            for i in keep
        ]
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces

    def _decode(self, outputs: list[np.ndarray], in_h: int, in_w: int):
        """Scores (N,), boxes (N, 4) and keypoints (N, 5, 2) of anchors over the threshold, canvas pixels."""
        fmc = len(self._strides)
        scores, boxes, keypoints = [], [], []
        for level, stride in enumerate(self._strides):
            level_scores = _unbatch(outputs[level]).reshape(-1)
            bbox_deltas = _unbatch(outputs[level + fmc]) * stride
            kps_deltas = _unbatch(outputs[level + 2 * fmc]) * stride
            centres = _anchor_centres(in_h // stride, in_w // stride, stride, self._anchors)
            hit = level_scores >= self.det_threshold
            c, d = centres[hit], bbox_deltas[hit]
            scores.append(level_scores[hit])
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:4]], axis=1))
            keypoints.append(c[:, None, :] + kps_deltas[hit].reshape(-1, 5, 2))
        return (
            np.concatenate(scores).astype(np.float32),
            np.concatenate(boxes).astype(np.float32),
            np.concatenate(keypoints).astype(np.float32),
        )

    # -- identity ----------------------------------------------------------------------------

    def align(self, rgb: np.ndarray, face: Face, size: int | None = None) -> np.ndarray:
        """The ArcFace input crop: the 5 keypoints moved onto the template, size x size RGB.

        `size` other than the recognizer's gives the same framing larger (insightface's norm_crop):
        IP-Adapter FaceID Plus reads the face at 224 px with its CLIP image encoder.
        """
        size = size or self._rec_size
        keypoints = np.asarray(face.keypoints, np.float64)
        if keypoints.shape != (5, 2):
            raise ValueError("insightface embedding needs the 5 SCRFD keypoints of a face from detect()")
        template = ARCFACE_TEMPLATE * (size / 112.0)
        return warp_affine(_as_rgb(rgb), similarity_transform(keypoints, template), size)

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        crop = self.align(rgb, face)
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        vector = self._rec.run(None, {self._rec_input: np.ascontiguousarray(blob)})[0].reshape(-1)
        return (vector / (np.linalg.norm(vector) + 1e-12)).astype(np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return cosine_distance(a, b)

    # -- gender ------------------------------------------------------------------------------

    def estimate_class(self, rgb: np.ndarray, face: Face) -> str | None:
        if self._genderage is None:
            return None
        size = self._ga_size
        x0, y0, x1, y1 = face.box
        scale = size / (max(x1 - x0, y1 - y0) * 1.5)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        matrix = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]])
        crop = warp_affine(_as_rgb(rgb), matrix, size)
        # This model was converted from mxnet and normalises inside the graph: raw 0..255 RGB in.
        blob = crop.astype(np.float32).transpose(2, 0, 1)[None]
        pred = self._genderage.run(None, {self._ga_input: np.ascontiguousarray(blob)})[0].reshape(-1)
        return "man" if int(np.argmax(pred[:2])) == 1 else "woman"  # [female, male, age/100]
