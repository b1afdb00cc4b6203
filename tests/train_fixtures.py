"""The tiny SD1 model, the prepared dataset and the settings the training tests share (a helper module).

The model is tiny and randomly initialised (tests/tiny_models.py) with the real architecture; the dataset is
three real photos (the astronaut at 512 px, as `headshot prepare` writes them). `_settings` trains at 32 px
without gradient checkpointing so the suite stays fast; `_train` runs the engine in this process.
"""

from __future__ import annotations

import json

import pytest
import tiny_models

from headshot.samples import astronaut_shots
from headshot.train.engine import LoraTrainer
from headshot.train.launch import create_job
from headshot.train.settings import TrainSettings


@pytest.fixture(scope="session")
def sd1_folder(tmp_path_factory):
    return tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """A prepared dataset: kohya layout, captions with the trigger first, report.json."""
    root = tmp_path_factory.mktemp("dataset")
    subset = root / "img" / "10_ohwx woman"
    subset.mkdir(parents=True)
    for i, name in enumerate(["astronaut.png", "astronaut_closeup.jpg", "astronaut_mirrored.jpg"]):
        astronaut_shots()[name].convert("RGB").resize((512, 512)).save(subset / f"{i:02d}.png")
        (subset / f"{i:02d}.txt").write_text("ohwx woman, smile, orange spacesuit")
    (root / "report.json").write_text(json.dumps({"trigger": "ohwx", "class": "woman", "photos": []}))
    return root


def _settings(dataset, base, out, **overrides) -> TrainSettings:
    values = dict(
        dataset_dir=str(dataset),
        base_model=str(base),
        out_dir=str(out),
        steps=8,
        resolution=32,
        rank=4,
        alpha=4.0,
        lr=1e-3,
        scheduler="constant",
        warmup_steps=0,
        validation_images=0,
        checkpoint_every=4,
        face_backend="dlib",
        device="cpu",
        noise_offset=0.0,
        gradient_checkpointing=False,
    )
    values.update(overrides)
    return TrainSettings(**values)


def _train(settings, base=None):
    trainer = LoraTrainer(settings, create_job(settings), base=base)
    return trainer, trainer.run()


def finished_run_whose_worker_aborted(folder):
    """A training run whose job is recorded as done and whose worker process then aborted (a crash at shutdown)."""
    import subprocess
    import sys

    from headshot.train.job import JobFolder
    from headshot.train.launch import TrainingRun

    job = JobFolder(folder)
    job.path.mkdir()
    job.write({"state": "done"})
    aborting = subprocess.Popen([sys.executable, "-c", "import os; os.abort()"])
    aborting.wait()
    return TrainingRun(job, aborting)
