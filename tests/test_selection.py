"""The likeness-scored checkpoint choice on real face photos, with the dlib backend.

A tiny diffusion model draws no faces, so the renderer is the one stand-in here: for each checkpoint
it returns real photos (the astronaut, or other people from the insightface wheel), as a LoRA that
had learnt, or not learnt, the person would draw them. Face finding, embedding, distances and the
rule itself are the real code.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from insightface_stubs import pack  # noqa: F401  (a buffalo_l folder of stand-in graphs)
from PIL import Image

from headshot.errors import HeadshotError
from headshot.faces.dlib_backend import DlibFaceAnalyzer
from headshot.samples import GROUP_MEMBERS, astronaut_shots, insightface_image
from headshot.train import selection
from headshot.train.input_cache import InputCache
from headshot.train.job import JobFolder
from headshot.train.selection import CheckpointJudge, reference_in_background
from headshot.train.settings import TrainSettings


@pytest.fixture(scope="module")
def photos():
    shots = astronaut_shots()
    group = insightface_image("t1.jpg")
    strangers = [group.crop(box).resize((480, 480), Image.LANCZOS) for box in GROUP_MEMBERS.values()]
    hanks = insightface_image("Tom_Hanks_54745.png").resize((448, 448), Image.LANCZOS)
    noise = Image.fromarray((np.random.default_rng(0).random((400, 400, 3)) * 255).astype(np.uint8))
    return {
        "training": [shots["astronaut.png"], shots["astronaut_mirrored.jpg"], shots["astronaut_wide.jpg"]],
        "likeness": [shots["astronaut_closeup.jpg"], shots["astronaut_tilted.jpg"]],
        "strangers": strangers,
        "others": [hanks, strangers[0]],
        "half_faceless": [shots["astronaut.png"], noise],
    }


class Renderer:
    """Stands in for the pipeline: the photos the checkpoint under judgement 'draws', one per call."""

    def __init__(self):
        self.queue: list[Image.Image] = []

    def __call__(self, prompt, **kwargs):
        assert "ohwx woman" in prompt and kwargs["height"] == kwargs["width"] == 256
        return SimpleNamespace(images=[self.queue.pop(0)])


def _trainer(tmp_path, photos, cache: InputCache | None = None, digest: str = "", **settings_changes):
    """What the judge reads of a LoraTrainer."""
    images = []
    for i, photo in enumerate(photos["training"]):
        photo.convert("RGB").save(tmp_path / f"{i}.png")
        images.append(SimpleNamespace(path=tmp_path / f"{i}.png"))
    job = JobFolder(tmp_path / "job")
    job.path.mkdir(exist_ok=True)
    values = dict(
        dataset_dir=str(tmp_path),
        base_model="unused",
        out_dir=str(job.path),
        steps=400,
        resolution=256,
        validation_images=2,
        validation_steps=2,
        face_backend="dlib",
    )
    settings = TrainSettings(**{**values, **settings_changes})
    return SimpleNamespace(
        settings=settings,
        job=job,
        training_set=SimpleNamespace(images=images, trigger="ohwx", class_word="woman"),
        input_cache=cache or InputCache(None),
        photos_digest=digest,
    )


def _judge(tmp_path, photos, cache: InputCache | None = None, digest: str = "") -> tuple[CheckpointJudge, Renderer]:
    trainer = _trainer(tmp_path, photos, cache, digest)
    judge = CheckpointJudge(trainer, SimpleNamespace(unet=torch.nn.Linear(1, 1)))
    renderer = Renderer()
    judge._pipeline = renderer
    judge.prepare_reference()
    assert judge.reference_count == 3
    return judge, renderer


def test_the_checkpoint_whose_renders_look_like_the_person_is_chosen(tmp_path, photos):
    judge, renderer = _judge(tmp_path, photos)
    for step, shown in [(100, "strangers"), (200, "likeness"), (300, "others"), (400, "half_faceless")]:
        renderer.queue = list(photos[shown])
        judge.judge(step)
    records = {r["step"]: r for r in judge.records}
    same = judge.analyzer.same_person_distance
    assert records[200]["faces"] == 2 and records[200]["mean_distance"] < same
    for step in (100, 300):
        assert records[step]["faces"] == 2 and records[step]["mean_distance"] > same
    # the exact training photo is closest of all, but a render without a face counts against step 400
    assert records[400]["faces"] == 1 and records[400]["mean_distance"] < records[200]["mean_distance"]

    choice = judge.choose()
    assert choice["step"] == 200 and choice["mean_distance"] == records[200]["mean_distance"]
    saved = json.loads((judge.trainer.job.path / "validation.json").read_text())
    assert saved["choice"]["step"] == 200 and saved["reference_images"] == 3
    assert [im["faceless"] for im in records[400]["images"]] == [False, True]
    assert all((judge.trainer.job.path / "samples" / f"step-{s:06d}").is_dir() for s in (100, 200, 300, 400))


def test_without_a_face_in_any_render_the_last_checkpoint_is_kept(tmp_path, photos):
    judge, renderer = _judge(tmp_path, photos)
    noise = photos["half_faceless"][1]
    for step in (100, 200):
        renderer.queue = [noise, noise]
        judge.judge(step)
    choice = judge.choose()
    assert choice["step"] == 200 and "none of the 4 validation images had a face" in choice["reason"]


def test_a_second_run_reads_the_photos_face_embeddings_from_the_cache(tmp_path, photos, monkeypatch):
    cache = InputCache(tmp_path / "input-cache")
    first, _ = _judge(tmp_path, photos, cache, digest="photos-a")
    detected = []
    real_detect = DlibFaceAnalyzer.detect
    monkeypatch.setattr(DlibFaceAnalyzer, "detect", lambda self, rgb: detected.append(1) or real_detect(self, rgb))

    again, _ = _judge(tmp_path, photos, cache, digest="photos-a")
    assert detected == [] and again.reference_count == 3
    assert again.reference_photos is not None and first.reference_photos is not None
    assert np.array_equal(again.reference_photos, first.reference_photos)

    _judge(tmp_path, photos, cache, digest="photos-b")  # other photos: their faces are found again
    assert len(detected) >= 3


def test_the_reference_found_in_the_background_is_the_one_found_in_place(tmp_path, photos, monkeypatch):
    """The engine starts the search for the photos' faces before the models load; it runs on a thread of its own
    and gives the judge the reference it would have found itself."""
    in_place, _ = _judge(tmp_path, photos)
    threads = []
    real = selection.cached_identity_reference
    monkeypatch.setattr(
        selection, "cached_identity_reference", lambda *a: threads.append(threading.current_thread()) or real(*a)
    )
    trainer = _trainer(tmp_path, photos)
    found = reference_in_background(trainer)
    judge = CheckpointJudge(trainer, SimpleNamespace(unet=torch.nn.Linear(1, 1)))
    judge.prepare_reference(found)
    assert threads and threads[0] is not threading.main_thread()
    assert judge.reference_count == 3 and judge.reference is not None and in_place.reference is not None
    assert np.array_equal(judge.reference, in_place.reference)


def test_a_face_backend_that_fails_in_the_background_fails_the_judge_with_its_reason(tmp_path, photos):
    """insightface has no model files in an empty folder: the error raised on the background thread is the one
    the run stops with, not a hang or a missing reference."""
    trainer = _trainer(tmp_path, photos, face_backend="insightface", face_model_dirs=[str(tmp_path / "empty")])
    judge = CheckpointJudge(trainer, SimpleNamespace(unet=torch.nn.Linear(1, 1)))
    with pytest.raises(HeadshotError) as caught:
        judge.prepare_reference(reference_in_background(trainer))
    assert "insightface" in str(caught.value)


def test_with_validation_off_no_face_model_stays_loaded_and_the_reference_names_its_backend(
    tmp_path, photos, monkeypatch
):
    """A run that scores no checkpoint needs the analyzer only for the photos' reference: its models (insightface's
    sessions hold hundreds of MB) must not stay through the steps, and identity.json still names the backend."""
    import gc
    import weakref

    opened = []
    load = selection.load_face_analyzer

    def load_noting(*args, **kwargs):  # the real loader; a weak reference to what it opened
        analyzer = load(*args, **kwargs)
        opened.append(weakref.ref(analyzer))
        return analyzer

    monkeypatch.setattr(selection, "load_face_analyzer", load_noting)
    trainer = _trainer(tmp_path, photos, validation_images=0)
    found = reference_in_background(trainer)
    judge = CheckpointJudge(trainer, SimpleNamespace(unet=torch.nn.Linear(1, 1)))
    judge.prepare_reference(found)
    gc.collect()
    assert judge.reference_count == 3 and judge.analyzer is None
    assert len(opened) == 1 and opened[0]() is None  # neither the judge nor the finished search holds it
    saved = json.loads(open(judge.save_reference(tmp_path / "lora.identity.json")).read())
    assert saved["backend"] == "dlib" and saved["same_person_distance"] == 0.6 and saved["images"] == 3


def test_the_judge_scores_faces_on_the_cpu_leaving_the_gpu_to_training(tmp_path, photos, pack, monkeypatch):
    """Where onnxruntime could run insightface on CUDA, the judge's analyzer (the photos' reference now, every
    checkpoint's renders later) still runs on the CPU: a CUDA session keeps its arena on the card through the
    steps. onnxruntime-gpu is stood in for by its provider list (there is no GPU here)."""
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    trainer = _trainer(tmp_path, photos, face_backend="insightface", face_model_dirs=[str(pack)])
    analyzer, _, _ = CheckpointJudge.find_reference(trainer)
    assert analyzer.providers == ["CPUExecutionProvider"]
