"""A workflow is shared data: what its widgets may make the nodes read, write and load.

Folder and file widgets reach only ComfyUI's input, output, temp and models folders (symlinks and
'..' resolved first) unless the person running ComfyUI lists more in HEADSHOT_ALLOWED_DIRS; names
that become part of a path go through headshot.outputs.safe_name; a job folder's records are data;
a broken pack says so loudly. The ComfyUI host modules are the
stand-ins of comfy_host_standin (see its docstring); the nodes and the core run for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from comfy_host_standin import ROOT, comfy_host  # noqa: F401  (comfy_host: a fixture)
from test_comfy_training import train_args

from comfy_nodes import NODE_CLASS_MAPPINGS, training  # noqa: E402
from headshot.errors import HeadshotError
from headshot.samples import astronaut_shots

PHOTO = "astronaut.png"
ENV = "HEADSHOT_ALLOWED_DIRS"  # the person's setting (a workflow cannot change the environment)


@pytest.fixture
def outside(tmp_path):
    """A home folder of the person's, beside (not inside) the ComfyUI folders."""
    folder = tmp_path / "home" / "me" / "Pictures"
    folder.mkdir(parents=True)
    astronaut_shots()[PHOTO].save(folder / PHOTO)
    (folder / "me.identity.json").write_text("{}")
    return folder


@pytest.fixture
def inside(comfy_host):
    """A photo folder in ComfyUI's input folder, a dataset folder in its output, a base model file."""
    photos = comfy_host.base / "input" / "selfies"
    photos.mkdir()
    astronaut_shots()[PHOTO].save(photos / PHOTO)
    dataset = comfy_host.base / "output" / "headshot_jobs" / "datasets" / "me"
    (dataset / "img" / "10_ohwx woman").mkdir(parents=True)
    (dataset / "img" / "10_ohwx woman" / "00.txt").write_text("ohwx woman")
    (comfy_host.base / "models" / "checkpoints" / "base.safetensors").write_bytes(b"not read here")
    return {"photos": photos, "dataset": dataset}


def _node(name):
    return NODE_CLASS_MAPPINGS[name]()


def _prepare(**changes):
    args = dict(
        photos_folder="selfies",
        dataset_name="me",
        trigger="ohwx",
        class_word="woman",
        resolution=512,
        face_backend="dlib",
        tagger="none",
    )
    return _node("HeadshotPrepareDataset").prepare(**{**args, **changes})


def _train(dataset, **changes):
    args = train_args(dataset, "base.safetensors", output_name="me")
    return _node("HeadshotTrainLora").train(**{**args, **changes})


PICTURE = torch.zeros(1, 64, 64, 3)
#: (widget as the error names it, call(outside folder, the inside fixture)): each must be refused
REFUSED = {
    "Load Photos folder": lambda out, ins: _node("HeadshotLoadPhotos").load(str(out), 512),
    "Load Photos folder, '..' from the input folder": lambda out, ins: _node("HeadshotLoadPhotos").load(
        "../../home/me/Pictures", 512
    ),
    "Prepare Dataset photos_folder": lambda out, ins: _prepare(photos_folder=str(out)),
    "Prepare Dataset reference_photo": lambda out, ins: _prepare(reference_photo=str(out / PHOTO)),
    "Train Identity LoRA dataset_path": lambda out, ins: _train(out),
    "Train Identity LoRA sd_scripts_path": lambda out, ins: _train(ins["dataset"], sd_scripts_path=str(out)),
    "reference_folder": lambda out, ins: _node("HeadshotRankByLikeness").rank(
        PICTURE, 0, "dlib", reference_folder=str(out)
    ),
    "identity_file": lambda out, ins: _node("HeadshotRankByLikeness").rank(
        PICTURE, 0, "dlib", identity_file=str(out / "me.identity.json")
    ),
    "clip_model_dir": lambda out, ins: _node("HeadshotEvaluateLikeness").evaluate(
        PICTURE, "dlib", prompt="a woman", clip_model_dir=str(out)
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_path_widgets_refuse_folders_outside_comfyui(case, comfy_host, inside, outside):
    before = sorted(p.relative_to(comfy_host.base) for p in comfy_host.base.rglob("*"))
    with pytest.raises(HeadshotError) as caught:
        REFUSED[case](outside, inside)
    message = str(caught.value)
    assert caught.value.code == "path_not_allowed", message
    assert message.startswith(case.split(",")[0] + " ")  # names the widget ...
    for root in ("input", "output", "models"):  # ... and where paths may lead
        assert str((comfy_host.base / root).resolve()) in message
    assert ENV in message
    assert sorted(p.relative_to(comfy_host.base) for p in comfy_host.base.rglob("*")) == before  # nothing written


def test_a_symlink_in_the_input_folder_does_not_lead_out_of_it(comfy_host, outside):
    (comfy_host.base / "input" / "holiday").symlink_to(outside, target_is_directory=True)
    with pytest.raises(HeadshotError, match="Load Photos folder 'holiday' is outside") as caught:
        _node("HeadshotLoadPhotos").load("holiday", 512)
    assert caught.value.code == "path_not_allowed"


def test_a_dataset_folder_linked_out_of_comfyui_is_not_written(comfy_host, inside, outside):
    datasets = comfy_host.base / "output" / "headshot_jobs" / "datasets"
    (datasets / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(HeadshotError, match="Prepare Dataset dataset_name") as caught:
        _prepare(dataset_name="linked")
    assert caught.value.code == "path_not_allowed"
    assert sorted(p.name for p in outside.iterdir()) == [PHOTO, "me.identity.json"]


def test_HEADSHOT_ALLOWED_DIRS_lets_the_person_allow_more(comfy_host, outside, monkeypatch, tmp_path):
    from comfy_nodes import paths

    monkeypatch.setenv(ENV, f"{tmp_path / 'elsewhere'}{os.pathsep}{outside.parent}")
    _, names, folder = _node("HeadshotLoadPhotos").load(str(outside), 256)
    assert names == PHOTO and Path(folder) == outside.resolve()
    with pytest.raises(HeadshotError, match="outside"):  # a sibling of an allowed folder stays out
        paths.allowed_path(outside.parents[1] / "Documents", "folder")


def test_IS_CHANGED_never_reads_a_folder_outside_comfyui(comfy_host, outside):
    load, train = NODE_CLASS_MAPPINGS["HeadshotLoadPhotos"], NODE_CLASS_MAPPINGS["HeadshotTrainLora"]
    before = load.IS_CHANGED(folder=str(outside), max_side=512), train.IS_CHANGED(dataset_path=str(outside))
    astronaut_shots()["astronaut_closeup.jpg"].save(outside / "new.jpg")
    assert (load.IS_CHANGED(folder=str(outside), max_side=512), train.IS_CHANGED(dataset_path=str(outside))) == before


# ---------------------------------------------------------------------------------------------
# names that become part of a path


@pytest.mark.parametrize(
    "widget, value",
    [
        ("trigger", "../../../evil"),
        ("class_word", "/../../../X"),
        ("dataset_name", "../../escaped"),
        ("trigger", "a\\b"),
    ],
)
def test_prepare_names_that_become_paths_are_refused(widget, value, comfy_host, inside, tmp_path):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(HeadshotError) as caught:
        _prepare(**{widget: value})
    assert caught.value.code == "bad_name" and str(caught.value).startswith(f"Prepare Dataset {widget} ")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_train_output_name_and_style_names_are_refused(comfy_host, inside):
    with pytest.raises(HeadshotError, match="Train Identity LoRA output_name") as caught:
        _train(inside["dataset"], output_name="../../victim")
    assert caught.value.code == "bad_name" and not (comfy_host.base / "output" / "headshot_jobs" / "jobs").exists()
    with pytest.raises(HeadshotError, match="Style Template style") as caught:
        _node("HeadshotStyleTemplate").template("../../secrets/x", "sd1", "ohwx", "man", "none", 512, 512)
    assert caught.value.code == "bad_name"


# ---------------------------------------------------------------------------------------------
# job folders are data


def test_train_installs_only_the_job_folders_own_lora(comfy_host, inside, tmp_path):
    """A finished job whose job.json names a file elsewhere: that file is never copied into loras/."""
    from headshot.train.job import JobFolder

    secret = tmp_path / "home" / "secret.safetensors"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"someone else's file")
    chosen = training.choices("me", "fast", 2, 4, 1e-3, 32, 1, 0, "dlib")
    job_dir = training.job_dir_for(chosen, inside["dataset"], comfy_host.base / "models/checkpoints/base.safetensors")
    JobFolder(job_dir).write({"state": "done", "lora": str(secret), "chosen_step": 2})
    with pytest.raises(HeadshotError) as caught:
        _train(inside["dataset"])
    assert caught.value.code == "lora_missing" and str(job_dir / "me.safetensors") in str(caught.value)
    assert not (comfy_host.base / "models" / "loras" / "headshot").exists()


def test_validation_samples_outside_the_job_folder_are_not_shown(tmp_path):
    job_dir, elsewhere = tmp_path / "job", tmp_path / "private.png"
    (job_dir / "samples").mkdir(parents=True)
    astronaut_shots()[PHOTO].save(elsewhere)
    astronaut_shots()[PHOTO].save(job_dir / "samples" / "own.png")
    images = [
        {"path": str(elsewhere)},
        {"path": str(job_dir / "samples" / "../../private.png")},
        {"path": str(job_dir / "samples" / "own.png")},
    ]
    (job_dir / "validation.json").write_text(json.dumps({"checkpoints": [{"step": 5, "images": images}]}))
    from headshot.train.job_reuse import chosen_samples

    assert chosen_samples(job_dir, 5) == [(job_dir / "samples" / "own.png").resolve()]


def test_the_train_node_never_loads_job_state_itself():
    """Resuming is the core's (safetensors + JSON state): no pickle load anywhere in the node pack."""
    sources = {p.name: p.read_text() for p in (ROOT / "comfy_nodes").glob("*.py")}
    assert not [name for name, text in sources.items() if "torch.load" in text or "state.pt" in text]
    assert "train_or_reuse(settings" in sources["training.py"]  # resuming: the core's job_reuse


# ---------------------------------------------------------------------------------------------
# the pack's entry point (the job routes' name checks and event clamping: tests/test_job_listing.py)


LOAD_LIKE_COMFYUI = """
import importlib.util, os, sys
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("headshot_studio", os.path.join(path, "__init__.py"),
                                              submodule_search_locations=[path])
module = importlib.util.module_from_spec(spec)
sys.modules["headshot_studio"] = module
spec.loader.exec_module(module)
print("NODES", len(module.NODE_CLASS_MAPPINGS))
"""


def test_a_broken_pack_is_logged_loudly_and_comfyui_goes_on(tmp_path):
    """The entry point, loaded as ComfyUI loads a custom node, over a deliberately broken comfy_nodes."""
    pack = tmp_path / "custom_nodes" / "headshot-studio"
    (pack / "comfy_nodes").mkdir(parents=True)
    shutil.copy(ROOT / "__init__.py", pack / "__init__.py")
    (pack / "comfy_nodes" / "__init__.py").write_text("raise RuntimeError('deliberately broken for this test')\n")
    run = subprocess.run(
        [sys.executable, "-c", LOAD_LIKE_COMFYUI, str(pack)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and "NODES 0" in run.stdout, run.stderr  # ComfyUI itself keeps running
    assert "[Headshot Studio]" in run.stderr and "Traceback (most recent call last)" in run.stderr
    assert "RuntimeError: deliberately broken for this test" in run.stderr
