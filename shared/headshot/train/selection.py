"""Likeness-scored checkpoint choice: render, find faces, compare with the training set.

EasyPhoto's idea (validation images scored by face similarity) with two changes: images
without a face count against a checkpoint instead of being skipped, and when no image has a
face the choice says so and falls back to the last checkpoint rather than inventing a score.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from ..devices import reusing_freed_memory
from ..faces import FaceAnalyzer, load_face_analyzer
from ..faces.framing import find_upright
from ..faces.subject import pick_subject
from ..outputs import atomic_write_json
from .base_model import diffusers_pipeline
from .input_cache import InputCache, file_identity

NEGATIVE_PROMPT = "blurry, lowres, deformed, cartoon, text, watermark"


def identity_reference(images, analyzer) -> tuple[np.ndarray | None, int]:
    """Each training image's face embedding, one row per image with a face (None when none has one), and how
    many had a face: who the LoRA should draw. Images are read as evaluate reads reference photos (upright by
    EXIF), so distances to these rows equal distances to the photos themselves."""
    from ..errors import HeadshotError
    from ..photos import read_photo

    embeddings = []
    for item in images:
        try:
            image = read_photo(item.path).image
        except HeadshotError:  # unreadable now: passed over, as evaluate passes it over
            continue
        upright = find_upright(image.convert("RGB"), analyzer)
        subject, _ = pick_subject(upright.faces)
        if subject is not None:
            embeddings.append(upright.embed(subject))
    return (np.stack(embeddings) if embeddings else None), len(embeddings)


def cached_identity_reference(cache: InputCache, images, photos: str, analyzer) -> tuple[np.ndarray | None, int]:
    """`identity_reference` read from `cache` when these photos (`photos`: their digest) were embedded by this
    backend with these model files before: a resumed, repeated or swept run finds no face again."""
    key = cache.key("faces", photos, analyzer.name, [file_identity(path) for path in analyzer.model_files])
    stored = cache.load(key)
    if stored is not None:
        tensors, layout = stored
        count, stored_rows = layout.get("count"), tensors.get("rows")
        if count == 0 and stored_rows is None:
            return None, 0
        if stored_rows is not None and stored_rows.ndim == 2 and len(stored_rows) == count:
            return stored_rows.numpy(), count
    rows, count = identity_reference(images, analyzer)
    cache.save(key, {} if rows is None else {"rows": torch.from_numpy(np.asarray(rows))}, {"count": count})
    return rows, count


def write_identity_reference(path: Path, analyzer, embedding: np.ndarray | None, count: int) -> str | None:
    """The reference saved beside the LoRA, for ranking generated images by likeness later: the mean embedding
    ("embedding", what ranking compares with) and, given one row per photo, each photo's ("embeddings": evaluate's
    face distance averages over the photos, as face_recognition's metric does)."""
    if embedding is None:
        return None
    rows = np.atleast_2d(np.asarray(embedding, np.float64))
    data = {
        "backend": analyzer.name,
        "embedding": [round(float(v), 6) for v in rows.mean(axis=0)],
        "images": count,
        "same_person_distance": analyzer.same_person_distance,
    }
    if np.ndim(embedding) == 2:
        data["embeddings"] = [[round(float(v), 6) for v in row] for row in rows]
    atomic_write_json(path, data)
    return str(path)


class ReferenceBackend(NamedTuple):
    """What the identity reference records of the analyzer that made it (all a run that scores nothing keeps)."""

    name: str
    same_person_distance: float


def reference_in_background(trainer) -> Future:
    """`CheckpointJudge.find_reference` started on a thread of its own, before the models load: the faces of the
    training photos are found while the imports and the loading leave a core idle (dlib's detector runs
    without the GIL, its descriptor holds it: about 0.4 s of the 1.1 s for 4 photos comes off the start on 2
    cores). `prepare_reference` waits for it and raises what it raised."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="identity-reference")
    try:
        return pool.submit(CheckpointJudge.find_reference, trainer)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task


class CheckpointJudge:
    def __init__(self, trainer, base) -> None:
        self.trainer, self.base = trainer, base
        self.settings = trainer.settings
        self.records: list[dict] = []
        self.reference: np.ndarray | None = None
        self.reference_photos: np.ndarray | None = None  # one row per training photo with a face
        self.analyzer: FaceAnalyzer | None = None  # None where nothing is scored (see find_reference)
        self.backend: ReferenceBackend | None = None
        self.reference_count = 0
        self._pipeline = None
        path = trainer.job.path / "validation.json"
        if path.exists():  # a resumed job keeps the scores of checkpoints judged before the stop
            self.records = json.loads(path.read_text())["checkpoints"]

    # -- identity reference ---------------------------------------------------------------------
    @staticmethod
    def find_reference(trainer) -> tuple[FaceAnalyzer | ReferenceBackend, np.ndarray | None, int]:
        """(the face analyzer, the training photos' embeddings, how many had a face): needs no model loaded. Where
        no checkpoint is scored (validation off), only the analyzer's name and threshold come back: its face models
        (insightface's sessions hold hundreds of MB) go with this call instead of staying through the steps."""
        s = trainer.settings
        # on the CPU: a CUDA onnxruntime session would hold its arena on the card through every step after
        # (hundreds of MB of an 8 GB card), for a few photos at the start and a few renders per checkpoint
        analyzer = load_face_analyzer(s.face_backend, s.face_model_dirs, cpu_only=True)
        photos, count = cached_identity_reference(
            trainer.input_cache, trainer.training_set.images, trainer.photos_digest, analyzer
        )
        if not s.validation_images:
            return ReferenceBackend(analyzer.name, analyzer.same_person_distance), photos, count
        return analyzer, photos, count

    def prepare_reference(
        self, found: Future[tuple[FaceAnalyzer | ReferenceBackend, np.ndarray | None, int]] | None = None
    ) -> None:
        """The reference checkpoints are judged against, from `found` (`reference_in_background`) if given."""
        analyzer, photos, self.reference_count = (
            found.result() if found is not None else self.find_reference(self.trainer)
        )
        self.backend = ReferenceBackend(analyzer.name, analyzer.same_person_distance)
        self.analyzer = analyzer if isinstance(analyzer, FaceAnalyzer) else None
        self.reference_photos = photos
        self.reference = None if photos is None else photos.mean(axis=0)  # what checkpoints are judged against

    def save_reference(self, path: Path) -> str | None:
        return write_identity_reference(path, self.backend, self.reference_photos, self.reference_count)

    # -- judging --------------------------------------------------------------------------------
    def judge(self, step: int) -> dict:
        s = self.settings
        record: dict[str, Any] = {"step": step, "images": [], "faces": 0, "mean_distance": None}
        if s.validation_images:
            record["images"] = self._render_and_score(step)
            distances = [im["distance"] for im in record["images"] if im["distance"] is not None]
            record["faces"] = len(distances)
            record["mean_distance"] = round(float(np.mean(distances)), 4) if distances else None
        self.records = [r for r in self.records if r["step"] != step] + [record]
        self._write()
        self.trainer.job.emit(
            "validation",
            step=step,
            faces=record["faces"],
            images=len(record["images"]),
            mean_distance=record["mean_distance"],
        )
        return record

    def choose(self) -> dict:
        """The checkpoint whose images most often show a face, then look most like the person."""
        judged = [r for r in self.records if r["images"]]
        with_faces = [r for r in judged if r["faces"]]
        final = max(r["step"] for r in self.records) if self.records else self.settings.steps
        if not judged:
            choice = {
                "step": final,
                "reason": "no validation images were rendered (validation off): the last checkpoint is used",
            }
        elif not with_faces:
            choice = {
                "step": final,
                "reason": f"none of the {sum(len(r['images']) for r in judged)} validation images "
                "had a face, so likeness could not be scored: the last checkpoint is used",
            }
        else:
            best = min(with_faces, key=lambda r: (-r["faces"], r["mean_distance"]))
            choice = {
                "step": best["step"],
                "reason": f"{best['faces']} of {len(best['images'])} images had a face, "
                f"mean identity distance {best['mean_distance']}",
                "mean_distance": best["mean_distance"],
            }
        self._write(choice)
        return choice

    def _write(self, choice: dict | None = None) -> None:
        data = {"reference_images": getattr(self, "reference_count", 0), "checkpoints": self.records}
        if choice:
            data["choice"] = choice
        atomic_write_json(self.trainer.job.path / "validation.json", data)

    def _render_and_score(self, step: int) -> list[dict]:
        s, ts = self.settings, self.trainer.training_set
        prompt = (
            s.validation_prompt or f"{ts.trigger} {ts.class_word or 'person'}, portrait photo, looking at the camera"
        )
        pipeline = self._pipe()
        folder = self.trainer.job.path / "samples" / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        unet = self.base.unet
        device = next(unet.parameters()).device
        was_training = unet.training
        unet.eval()
        results = []
        try:
            for i in range(s.validation_images):
                seed = s.seed + i
                with torch.no_grad(), reusing_freed_memory(device):  # on the CPU the VAE decode's blocks reused
                    image = pipeline(
                        prompt,
                        negative_prompt=NEGATIVE_PROMPT,
                        num_inference_steps=s.validation_steps,
                        height=s.resolution,
                        width=s.resolution,
                        generator=torch.Generator().manual_seed(seed),
                    ).images[0]
                path = folder / f"seed-{seed}.png"
                image.save(path)
                distance = self._distance(image)
                results.append({"path": str(path), "seed": seed, "faceless": distance is None, "distance": distance})
                self.trainer.job.emit("sample", step=step, path=str(path), seed=seed, distance=distance)
        finally:
            unet.train(was_training)
        return results

    def _distance(self, image: Image.Image) -> float | None:
        if self.reference is None or self.analyzer is None:  # both set by prepare_reference
            return None
        upright = find_upright(image, self.analyzer)
        subject, _ = pick_subject(upright.faces)
        if subject is None:
            return None
        return round(self.analyzer.distance(upright.embed(subject), self.reference), 4)

    def _pipe(self):
        if self._pipeline is None:
            self._pipeline = build_pipeline(self.base)
        return self._pipeline


def build_pipeline(base):
    """A diffusers text-to-image pipeline over the base model's live modules (no copy)."""
    from diffusers import DPMSolverMultistepScheduler

    # steps_offset 1 as SD's inference schedulers use; the training schedule has 0
    scheduler = DPMSolverMultistepScheduler.from_config(base.noise_scheduler.config, steps_offset=1)
    return diffusers_pipeline(base, "txt", scheduler)
