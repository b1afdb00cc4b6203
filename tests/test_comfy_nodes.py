"""The ComfyUI nodes: declarations against their functions, and the cheap nodes run for real through the core.

Every node's declared inputs and outputs against its function, the pack's loading (a module that
fails drops only its own nodes), folder registration and the image conversions; then the Style
Template and Pose Skeleton nodes, against the core's prompts and pose drawings. The other nodes
are in test_comfy_dataset_nodes, test_comfy_likeness_nodes, test_comfy_face_nodes and
test_comfy_training. ComfyUI's host modules are the stand-ins of comfy_host_standin (see its
docstring); nothing of our own logic is replaced.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from comfy_host_standin import (
    KSAMPLER_INPUTS,
    ROOT,
    _check_outputs,
    _folder_paths_standin,
    comfy_host,  # noqa: F401  (a fixture)
)
from PIL import Image

import comfy_nodes
from comfy_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from comfy_nodes.images import image_batch_to_pils, pil_to_image_batch
from headshot.samples import astronaut_shots

# ---------------------------------------------------------------------------------------------
# declarations


def _declared(cls) -> tuple[dict, dict]:
    types_ = cls.INPUT_TYPES()
    return types_.get("required", {}), types_.get("optional", {})


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_declared_inputs_and_outputs_match_the_function(name):
    cls = NODE_CLASS_MAPPINGS[name]
    required, optional = _declared(cls)
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    params = {k: p for k, p in params.items() if k != "self"}
    assert set(required) == {k for k, p in params.items() if p.default is inspect.Parameter.empty}, name
    assert set(optional) == {k for k, p in params.items() if p.default is not inspect.Parameter.empty}, name
    for input_name, declared in {**required, **optional}.items():
        assert declared[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    assert cls.CATEGORY.startswith("Headshot Studio/")
    assert name.startswith("Headshot") and NODE_DISPLAY_NAME_MAPPINGS[name]
    if hasattr(cls, "IS_CHANGED"):  # ComfyUI passes constants, and None for linked inputs
        linked = {k: None for k in {**required, **optional}}
        first = cls.IS_CHANGED(**linked)
        # a hash that stays put while nothing changes (NaN or a new value would re-run the node every time)
        assert isinstance(first, str) and len(first) == 64 and cls.IS_CHANGED(**linked) == first, name


def test_the_nine_nodes_load_with_their_display_names():
    assert NODE_DISPLAY_NAME_MAPPINGS == {
        "HeadshotLoadPhotos": "Load Photos",
        "HeadshotPrepareDataset": "Prepare Dataset",
        "HeadshotTrainLora": "Train Identity LoRA",
        "HeadshotStyleTemplate": "Style Template",
        "HeadshotPoseSkeleton": "Pose Skeleton",
        "HeadshotFaceDetailer": "Face Detailer",
        "HeadshotFaceRestore": "Face Restore",
        "HeadshotApplyIdentityAdapter": "Apply Identity Adapter (one photo)",
        "HeadshotRankByLikeness": "Rank by Likeness",
        "HeadshotEvaluateLikeness": "Evaluate Likeness",
    }
    assert comfy_nodes.DISABLED == {}


def test_a_failing_module_drops_only_its_nodes_with_one_line():
    """A missing optional dependency (spandrel) and a module that fails to import (ranking)."""
    code = (
        "import json, sys; sys.modules['spandrel'] = None; sys.modules['comfy_nodes.ranking'] = None; "
        "import comfy_nodes as c; print('RESULT', json.dumps([sorted(c.NODE_CLASS_MAPPINGS), c.DISABLED]))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    nodes, disabled = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert "HeadshotFaceRestore" not in nodes and "HeadshotRankByLikeness" not in nodes
    assert "HeadshotStyleTemplate" in nodes and len(nodes) == 7
    assert "pip install spandrel" in disabled["Face Restore"]
    lines = [line for line in run.stdout.splitlines() if line.startswith("[Headshot Studio]")]
    assert len(lines) == 2 and "Face Restore disabled" in " ".join(lines)


def test_folders_are_registered_without_overriding_a_persons_paths(tmp_path, monkeypatch):
    fp = _folder_paths_standin(tmp_path)
    fp.folder_names_and_paths["facerestore_models"] = (["/from/extra_model_paths"], set())  # the yaml came first
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    host.register_folders()
    paths, extensions = fp.folder_names_and_paths["facerestore_models"]
    assert paths == ["/from/extra_model_paths", os.path.join(fp.models_dir, "facerestore_models")]
    assert extensions == set()  # the person's filter stays
    assert fp.folder_names_and_paths["insightface"][0] == [os.path.join(fp.models_dir, "insightface")]
    assert fp.folder_names_and_paths["headshot_jobs"][0] == [os.path.join(str(tmp_path / "output"), "headshot_jobs")]
    host.register_folders()  # a second registration changes nothing
    assert len(fp.folder_names_and_paths["facerestore_models"][0]) == 2


def test_image_conversions_round_trip():
    img = astronaut_shots()["astronaut.png"]
    batch = pil_to_image_batch([img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert batch.shape == (2, 512, 512, 3) and batch.dtype == torch.float32
    assert np.array_equal(np.asarray(image_batch_to_pils(batch)[0]), np.asarray(img))


# ---------------------------------------------------------------------------------------------
# the cheap nodes, for real


def test_style_template_gives_the_core_prompt_and_kSampler_names(comfy_host):
    from safetensors.torch import save_file

    from headshot.generate.pose_presets import preset_pose
    from headshot.generate.pose_render import render_openpose
    from headshot.generate.prompt_syntax import build_prompt
    from headshot.generate.styles import get_style

    lora = comfy_host.base / "models" / "loras" / "headshot" / "zoe.safetensors"
    lora.parent.mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, str(lora), metadata={"headshot.trigger": "zwx", "headshot.class_word": "woman"})
    cls = NODE_CLASS_MAPPINGS["HeadshotStyleTemplate"]
    assert "headshot/zoe.safetensors" in cls.INPUT_TYPES()["optional"]["lora_name"][0]
    result = cls().template(
        "linkedin_corporate", "sdxl", "", "", "from style", 0, 0, lora_name="headshot/zoe.safetensors"
    )
    _check_outputs(cls, result)
    positive, negative, width, height, steps, cfg, sampler_name, scheduler, pose, weight = result
    style = get_style("linkedin_corporate").for_family("sdxl")
    assert (positive, negative) == build_prompt(style, "zwx", "woman")
    assert (width, height, steps, cfg, weight) == (style.width, style.height, style.steps, style.cfg, style.lora_weight)
    assert (sampler_name, scheduler) == ("dpmpp_2m", "karras")
    assert sampler_name in KSAMPLER_INPUTS["sampler_name"][0] and scheduler in KSAMPLER_INPUTS["scheduler"][0]
    expected = render_openpose(preset_pose(style.pose, width, height), width, height)
    assert pose.shape == (1, height, width, 3)
    assert np.array_equal(np.asarray(image_batch_to_pils(pose)[0]), np.asarray(expected))


def test_style_template_group_prompt_pose_and_shared_weight():
    cls = NODE_CLASS_MAPPINGS["HeadshotStyleTemplate"]
    single = cls().template("studio_grey", "sd1", "ohwx", "man", "from style", 512, 512)
    group = cls().template("studio_grey", "sd1", "", "", "from style", 512, 512, group_subjects="ohwx man\nsks woman")
    assert "ohwx man and sks woman" in group[0] and "2 people" in group[0]
    assert group[-1] == pytest.approx(single[-1] / 2)
    assert group[8].float().mean() > 0  # two skeletons drawn
    nothing = cls().template("studio_grey", "sd1", "ohwx", "man", "none", 512, 512)
    assert float(nothing[8].max()) == 0.0  # no pose: a black image


def test_style_template_takes_the_pose_from_a_photo(comfy_host, monkeypatch):
    """pose_photo: without controlnet_aux the node says what to install; with it (a stand-in at its
    import boundary: its weights cannot be downloaded here) the photo's keypoints are drawn."""
    from headshot.errors import BackendUnavailable
    from headshot.generate.pose_keypoints import photo_pose_on_canvas
    from headshot.generate.pose_render import render_openpose

    cls = NODE_CLASS_MAPPINGS["HeadshotStyleTemplate"]
    assert cls.INPUT_TYPES()["optional"]["pose_photo"][0] == "IMAGE"
    photo = pil_to_image_batch([Image.new("RGB", (100, 50), "white")])
    monkeypatch.setitem(sys.modules, "controlnet_aux", None)
    with pytest.raises(BackendUnavailable, match="pip install controlnet_aux"):
        cls().template("studio_grey", "sd1", "ohwx", "man", "from style", 128, 128, pose_photo=photo)
    annotators = comfy_host.base / "models" / "annotators"
    annotators.mkdir(parents=True)
    (annotators / "body_pose_model.pth").write_bytes(b"stand-in")
    fake, loaded = types.ModuleType("controlnet_aux"), []

    class OpenposeDetector:  # controlnet_aux's interface: body_estimation(bgr) -> (candidate, subset)
        body_estimation = staticmethod(
            lambda bgr: (
                np.array([[50.0, 10.0, 0.9, 0], [50.0, 30.0, 0.9, 1]]),
                np.array([[0, 1] + [-1] * 18], dtype=float),
            )
        )

        @classmethod
        def from_pretrained(cls, path):
            loaded.append(path)
            return cls()

    fake.OpenposeDetector = OpenposeDetector
    monkeypatch.setitem(sys.modules, "controlnet_aux", fake)
    result = cls().template("studio_grey", "sd1", "ohwx", "man", "from style", 128, 128, pose_photo=photo)
    assert loaded == [str(annotators)]
    person = [(0.5, 0.2), (0.5, 0.6)] + [None] * 16
    expected = render_openpose(photo_pose_on_canvas([person], (100, 50), 128, 128), 128, 128)
    assert np.array_equal(np.asarray(image_batch_to_pils(result[8])[0]), np.asarray(expected))


def test_pose_skeleton_presets_json_and_mirror():
    from headshot.generate.pose import mirror_pose
    from headshot.generate.pose_presets import preset_pose
    from headshot.generate.pose_render import render_openpose

    cls = NODE_CLASS_MAPPINGS["HeadshotPoseSkeleton"]
    (image,) = cls().render("half_body_front", 384, 512, False, 4)
    _check_outputs(cls, (image,))
    expected = render_openpose(preset_pose("half_body_front", 384, 512), 384, 512)
    assert np.array_equal(np.asarray(image_batch_to_pils(image)[0]), np.asarray(expected))
    (mirrored,) = cls().render("headshot_three_quarter_left", 512, 512, True, 4)
    expected = render_openpose(mirror_pose(preset_pose("headshot_three_quarter_left", 512, 512)), 512, 512)
    assert np.array_equal(np.asarray(image_batch_to_pils(mirrored)[0]), np.asarray(expected))
    people = preset_pose("headshot_front", 512, 512)  # OpenPose's JSON, in pixels, gives the same picture
    flat = [v for p in people[0] for v in ((p[0] * 512, p[1] * 512, 1.0) if p else (0, 0, 0))]
    openpose = json.dumps({"people": [{"pose_keypoints_2d": flat}], "canvas_width": 512, "canvas_height": 512})
    (from_json,) = cls().render("custom", 512, 512, False, 4, keypoints_json=openpose)
    (preset,) = cls().render("headshot_front", 512, 512, False, 4)
    assert float((from_json - preset).abs().max()) < 1e-6
