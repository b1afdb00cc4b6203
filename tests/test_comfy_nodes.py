"""The ComfyUI nodes: declarations against their functions, and the nodes run for real through the core.

ComfyUI itself is not installed here. Where a node calls ComfyUI's own modules (folder_paths,
comfy.model_management, comfy.utils, comfy.sample, comfy.samplers, server), the fixtures below
put STAND-INS FOR THOSE HOST MODULES in sys.modules: the few functions the nodes call, with
ComfyUI's signatures and behaviour (folder registration, file lists, the interrupt flag, the
progress bar). Nothing of our own logic is replaced: the nodes run the real core (dlib faces,
prepare, training on a tiny random SD1 model, ranking, restoration with a random GFPGAN).
The Face Detailer's sampling is the one place where ComfyUI does the work (its VAE and
sampler); there the stand-ins record what our sampler adapter hands to ComfyUI and play a
simple VAE and sampler, so the test proves the wiring and that nothing outside the faces
changes, not ComfyUI's sampling (checked by hand against a real ComfyUI, see the report).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `comfy_nodes` as ComfyUI sees it: a folder of the pack

import comfy_nodes  # noqa: E402
from comfy_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host  # noqa: E402
from comfy_nodes.images import image_batch_to_pils, pil_to_image_batch  # noqa: E402
from headshot.samples import astronaut_shots, insightface_image  # noqa: E402

RECORDED = json.loads((Path(__file__).with_name("comfy_core_nodes.json")).read_text())["nodes"]
KSAMPLER_INPUTS = RECORDED["KSampler"]["input_types"]["required"]
PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


# ---------------------------------------------------------------------------------------------
# STAND-INS for ComfyUI's host modules


class InterruptProcessingException(Exception):
    """Stand-in for comfy.model_management.InterruptProcessingException."""


def _folder_paths_standin(base: Path) -> types.ModuleType:
    """STAND-IN for ComfyUI's folder_paths: the registry dict and the functions the nodes call."""
    fp = types.ModuleType("folder_paths")
    fp.supported_pt_extensions = set(PT_EXTENSIONS)
    fp.models_dir = str(base / "models")
    fp.folder_names_and_paths = {
        key: ([str(base / "models" / key)], set(PT_EXTENSIONS)) for key in ("checkpoints", "loras", "controlnet")
    }
    fp.filename_list_cache = {}
    for sub in ("output", "temp", "input", "models/checkpoints", "models/loras"):
        (base / sub).mkdir(parents=True, exist_ok=True)

    def add_model_folder_path(name, path, is_default=False):  # ComfyUI's semantics
        if name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[name][0]
            if path not in paths:
                paths.insert(0, path) if is_default else paths.append(path)
        else:
            fp.folder_names_and_paths[name] = ([path], set())

    def get_filename_list(name):
        paths, extensions = fp.folder_names_and_paths[name]
        found = set()
        for folder in map(Path, paths):
            if folder.is_dir():
                found |= {
                    p.relative_to(folder).as_posix()
                    for p in folder.rglob("*")
                    if p.is_file() and (not extensions or p.suffix.lower() in extensions)
                }
        return sorted(found)

    def get_full_path_or_raise(name, filename):
        for folder in fp.folder_names_and_paths[name][0]:
            if (Path(folder) / filename).is_file():
                return str(Path(folder) / filename)
        raise FileNotFoundError(f"Model in folder '{name}' with filename '{filename}' not found.")

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_filename_list = get_filename_list
    fp.get_full_path_or_raise = get_full_path_or_raise
    fp.get_output_directory = lambda: str(base / "output")
    fp.get_temp_directory = lambda: str(base / "temp")
    fp.get_input_directory = lambda: str(base / "input")
    return fp


class Host(types.SimpleNamespace):
    """The stand-in host modules of one test, and what the nodes did with them."""


@pytest.fixture
def comfy_host(tmp_path, monkeypatch):
    """STAND-INS for folder_paths, comfy.model_management, comfy.utils and comfy.samplers in sys.modules."""
    calls = []
    state = {"interrupt": False, "interrupt_after_updates": None}
    fp = _folder_paths_standin(tmp_path / "comfyui")

    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.processing_interrupted = lambda: state["interrupt"]

    def throw_exception_if_processing_interrupted():
        if state["interrupt"]:
            state["interrupt"] = False
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.unload_all_models = lambda: calls.append("unload_all_models")
    mm.soft_empty_cache = lambda force=False: calls.append("soft_empty_cache")
    mm.get_torch_device = lambda: torch.device("cpu")

    utils = types.ModuleType("comfy.utils")
    utils.PROGRESS_BAR_ENABLED = True
    updates = []

    class ProgressBar:  # ComfyUI's, with its hook's interrupt check
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            self.total = total or self.total
            self.current = min(value, self.total)
            updates.append((self.current, self.total))
            if state["interrupt_after_updates"] is not None and len(updates) >= state["interrupt_after_updates"]:
                state["interrupt"] = True

    utils.ProgressBar = ProgressBar
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSampler = types.SimpleNamespace(
        SAMPLERS=KSAMPLER_INPUTS["sampler_name"][0], SCHEDULERS=KSAMPLER_INPUTS["scheduler"][0]
    )
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils, comfy.samplers = mm, utils, samplers
    for name, module in {
        "folder_paths": fp,
        "comfy": comfy,
        "comfy.model_management": mm,
        "comfy.utils": utils,
        "comfy.samplers": samplers,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    host.register_folders()
    return Host(
        folder_paths=fp, calls=calls, state=state, updates=updates, base=tmp_path / "comfyui", model_management=mm
    )


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


def _check_outputs(cls, result):
    assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES)
    for kind, value in zip(cls.RETURN_TYPES, result):
        if kind == "IMAGE":
            assert value.dtype == torch.float32 and value.ndim == 4 and value.shape[-1] == 3
            assert value.numel() == 0 or 0.0 <= float(value.min()) <= float(value.max()) <= 1.0
        elif kind == "STRING":
            assert isinstance(value, str)
        elif kind == "INT":
            assert isinstance(value, int)
        elif kind == "FLOAT":
            assert isinstance(value, float)
        else:  # a combo output (KSampler's sampler or scheduler names)
            assert isinstance(value, str) and (value in kind if isinstance(kind, list) else kind == "COMBO")


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


def test_load_photos_from_a_folder_and_from_an_image_batch(comfy_host, tmp_path):
    folder = comfy_host.base / "input" / "selfies"  # a relative name is looked up in ComfyUI's input folder
    folder.mkdir()
    shots = astronaut_shots()
    for name in ("astronaut.png", "astronaut_wide.jpg", "astronaut_portrait.webp"):
        shots[name].save(folder / name)
    (folder / "notes.txt").write_text("not a photo")
    cls = NODE_CLASS_MAPPINGS["HeadshotLoadPhotos"]
    result = cls().load("selfies", 640)
    _check_outputs(cls, result)
    batch, names, photos_folder = result
    assert names.splitlines() == ["astronaut.png", "astronaut_portrait.webp", "astronaut_wide.jpg"]
    assert batch.shape[0] == 3 and max(batch.shape[1:3]) == 640
    assert Path(photos_folder) == folder.resolve()
    first = cls.IS_CHANGED(folder="selfies", max_side=640)
    assert cls.IS_CHANGED(folder="selfies", max_side=640) == first  # nothing changed: ComfyUI reuses the output
    assert cls.IS_CHANGED(folder="selfies", max_side=512) != first
    shots["astronaut_closeup.jpg"].save(folder / "astronaut_closeup.jpg")
    added = cls.IS_CHANGED(folder="selfies", max_side=640)
    assert added != first
    shots["astronaut_mirrored.jpg"].save(folder / "astronaut.png", format="PNG")  # a photo edited in place
    edited = cls.IS_CHANGED(folder="selfies", max_side=640)
    assert edited not in (first, added)
    (folder / "astronaut_closeup.jpg").unlink()
    assert cls.IS_CHANGED(folder="selfies", max_side=640) not in (first, added, edited)

    given = pil_to_image_batch([shots["astronaut.png"], shots["astronaut_mirrored.jpg"]])
    batch, names, photos_folder = cls().load("", 1024, images=given)
    written = sorted(Path(photos_folder).iterdir())
    assert [p.name for p in written] == names.splitlines() == ["photo_000.png", "photo_001.png"]
    assert np.array_equal(np.asarray(Image.open(written[1])), np.asarray(shots["astronaut_mirrored.jpg"]))


def test_prepare_dataset_on_sample_photos_with_dlib(comfy_host):
    from headshot.dataset.prepare import REPORT_NAME

    photos = comfy_host.base / "input" / "mixed"
    photos.mkdir()
    shots = astronaut_shots()
    for name in ("astronaut.png", "astronaut_closeup.jpg", "astronaut_mirrored.jpg", "astronaut_tilted.jpg"):
        shots[name].save(photos / name)
    insightface_image("Tom_Hanks_54745.png").resize((448, 448)).save(photos / "other_person.png")
    Image.fromarray((np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)).save(photos / "noise.png")
    cls = NODE_CLASS_MAPPINGS["HeadshotPrepareDataset"]
    result = cls().prepare(str(photos), "astronaut", "ohwx", "woman", 512, "dlib", "none")
    _check_outputs(cls, result)
    dataset_path, crops, report, sheet = result
    dataset = Path(dataset_path)
    assert dataset == Path(comfy_host.folder_paths.get_output_directory()) / "headshot_jobs" / "datasets" / "astronaut"
    assert (dataset / "dataset.toml").is_file()
    record = json.loads((dataset / REPORT_NAME).read_text())
    assert crops.shape == (record["summary"]["kept"], 512, 512, 3) and record["summary"]["kept"] == 4
    rejected = {line.split()[1]: line.split()[2] for line in report.splitlines() if line.startswith("rejected")}
    assert rejected == {"noise.png": "no_face:", "other_person.png": "different_person:"}
    assert "4 of 6 photos kept as 'woman'" in report  # the CLI's words (headshot.dataset.prepare_report)
    assert sheet.shape[0] == 1 and comfy_host.updates  # ComfyUI's progress bar moved


def _ranking_batch():
    shots = astronaut_shots()
    square = lambda img: img.convert("RGB").resize((384, 384), Image.LANCZOS)  # noqa: E731
    noise = Image.fromarray((np.random.default_rng(1).random((384, 384, 3)) * 255).astype(np.uint8))
    hanks = insightface_image("Tom_Hanks_54745.png")
    pictures = [square(hanks), square(shots["astronaut_closeup.jpg"]), noise, square(shots["astronaut_mirrored.jpg"])]
    return pictures, pil_to_image_batch(pictures)


def test_rank_by_likeness_on_real_photos(comfy_host):
    from headshot.faces.dlib_backend import DlibFaceAnalyzer
    from headshot.finish.ranking import identity_from_images, likeness

    pictures, batch = _ranking_batch()
    reference = pil_to_image_batch([astronaut_shots()["astronaut.png"]])
    cls = NODE_CLASS_MAPPINGS["HeadshotRankByLikeness"]
    result = cls().rank(batch, 0, "dlib", reference_images=reference)
    _check_outputs(cls, result)
    ranked, scores, faceless, below = result
    assert ranked.shape[0] == 3 and faceless.shape[0] == 1 and below.shape[0] == 0
    assert torch.equal(faceless[0], batch[2])
    assert {torch.equal(ranked[0], batch[i]) for i in (1, 3)} == {True, False}  # an astronaut first ...
    assert torch.equal(ranked[2], batch[0])  # ... the other person last
    lines = scores.splitlines()
    assert lines[1].startswith("#1 picture") and "set aside: picture 3: no face" in scores
    analyzer = DlibFaceAnalyzer()
    expected = likeness(
        pictures[0], analyzer, identity_from_images(image_batch_to_pils(reference), analyzer, "reference")
    ).score
    assert f"picture 1: likeness {expected:.3f}" in scores  # the core's own score
    assert not (comfy_host.base / "temp" / "headshot_reference").exists()  # no copies of the photos on disk

    ranked, _, _, below = cls().rank(batch, 1, "dlib", reference_images=reference)
    assert ranked.shape[0] == 1 and below.shape[0] == 2


def test_an_image_output_with_nothing_in_it_blocks_the_nodes_it_feeds(comfy_host, monkeypatch):
    """Inside ComfyUI an empty output is its ExecutionBlocker(None): SaveImage fails on an empty batch."""
    graph_utils = types.ModuleType("comfy_execution.graph_utils")  # STAND-IN for ComfyUI's module

    class ExecutionBlocker:
        def __init__(self, message):
            self.message = message

    graph_utils.ExecutionBlocker = ExecutionBlocker
    monkeypatch.setitem(sys.modules, "comfy_execution.graph_utils", graph_utils)
    _, batch = _ranking_batch()
    ranked, _, faceless, below = NODE_CLASS_MAPPINGS["HeadshotRankByLikeness"]().rank(batch[:2], 0, "dlib")
    assert ranked.shape[0] == 2  # both have a face (no identity given: not scored)
    assert isinstance(faceless, ExecutionBlocker) and faceless.message is None
    assert isinstance(below, ExecutionBlocker)


def test_evaluate_likeness_reports_distances_faceless_and_no_clip_score(comfy_host):
    _, batch = _ranking_batch()
    reference = pil_to_image_batch([astronaut_shots()["astronaut.png"]])
    cls = NODE_CLASS_MAPPINGS["HeadshotEvaluateLikeness"]
    result = cls().evaluate(batch, "dlib", reference_images=reference, prompt="a woman")
    _check_outputs(cls, result)
    text, report_json, mean_distance, faceless = result
    report = json.loads(report_json)
    assert faceless == report["faceless"] == 1 and report["faces"] == 3
    assert 0 < mean_distance == report["mean_distance"]
    assert report["clip_score"]["computed"] is False and "CLIP score: not computed" in text


def test_evaluate_likeness_clip_score_matches_a_reference_computation(comfy_host):
    """A tiny randomly initialised CLIP (the real architecture) and CLIP's real tokenizer files.

    The reference is computed apart from the node: PIL bicubic resize and CLIP's normalisation by
    hand, open_clip's own tokenizer, transformers' get_image_features / get_text_features, and the
    cosine in numpy. Seed 5 gives clearly positive, distinct cosines (seed 0 gives only negative
    ones, which the floor at 0 turns into all zeros: a comparison that would prove nothing).
    """
    open_clip = pytest.importorskip("open_clip")
    from tiny_models import write_clip_tokenizer_files
    from transformers import CLIPConfig, CLIPModel

    folder = comfy_host.base / "models" / "clip" / "tiny_clip"  # clip_model_dir must lie in ComfyUI's folders
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=49408
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(5)
    CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer_files(folder)
    pictures, batch = _ranking_batch()
    prompt = "corporate headshot of a woman"
    _, report_json, _, _ = NODE_CLASS_MAPPINGS["HeadshotEvaluateLikeness"]().evaluate(
        batch, "dlib", prompt=prompt, clip_model_dir=str(folder)
    )
    clip = json.loads(report_json)["clip_score"]

    model = CLIPModel.from_pretrained(str(folder)).eval()
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    pixels = np.stack(
        [(np.asarray(p.resize((32, 32), Image.BICUBIC), dtype=np.float64) / 255 - mean) / std for p in pictures]
    )  # the pictures are square: CLIP's resize + centre crop is a resize
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2).float())
        text = model.get_text_features(input_ids=open_clip.tokenize([prompt]))
    image = getattr(image, "pooler_output", image).numpy().astype(np.float64)
    text = getattr(text, "pooler_output", text).numpy().astype(np.float64)[0]
    cosine = image @ text / (np.linalg.norm(image, axis=1) * np.linalg.norm(text))
    expected = [100.0 * max(0.0, c) for c in cosine]
    assert min(expected) > 5 and max(expected) - min(expected) > 5  # the comparison can tell scores apart
    assert clip["computed"] and clip["per_image"] == pytest.approx(expected, abs=0.05)
    assert clip["mean"] == pytest.approx(sum(expected) / 4, abs=0.05)


def test_face_restore_from_facerestore_models(comfy_host):
    pytest.importorskip("spandrel")
    from spandrel.architectures.GFPGAN import GFPGAN

    folder = Path(comfy_host.folder_paths.get_folder_paths("facerestore_models")[0])
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"params_ema": GFPGAN().state_dict()}, folder / "GFPGANv1.4.pth")  # random weights, real layout
    (folder / "README.txt").write_text("not a model")
    cls = NODE_CLASS_MAPPINGS["HeadshotFaceRestore"]
    assert cls.INPUT_TYPES()["required"]["model_name"][0] == ["GFPGANv1.4.pth"]
    photo = astronaut_shots()["astronaut.png"]
    result = cls().restore(pil_to_image_batch([photo]), "GFPGANv1.4.pth", 0.5, 1.0, "dlib")
    _check_outputs(cls, result)
    image, report = result
    assert "1 face(s) found, 1 restored" in report
    changed = np.any(np.asarray(image_batch_to_pils(image)[0]) != np.asarray(photo), axis=-1)
    ys, xs = np.nonzero(changed)
    assert changed.any() and xs.min() > 100 and ys.max() < 260  # only around the face


# ---------------------------------------------------------------------------------------------
# Face Detailer: our Sampler adapter hands ComfyUI's VAE and sampler the right things


class StandInVAE:
    """STAND-IN for a ComfyUI VAE: encode [B,H,W,3] -> [B,4,H/8,W/8], decode back (blocky)."""

    def __init__(self):
        self.encoded = []

    def encode(self, pixels):
        self.encoded.append(tuple(pixels.shape))
        latent = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.cat([latent, torch.zeros_like(latent[:, :1])], dim=1)

    def decode(self, latent):
        return torch.nn.functional.interpolate(latent[:, :3], scale_factor=8, mode="nearest").movedim(1, -1).clamp(0, 1)


@pytest.fixture
def comfy_sampling(comfy_host, monkeypatch):
    """STAND-IN for comfy.sample: records the call and brightens the masked latent by `denoise`."""
    calls = []
    sample = types.ModuleType("comfy.sample")
    sample.fix_empty_latent_channels = lambda model, latent: latent
    sample.prepare_noise = lambda latent, seed, inds=None: torch.randn(latent.shape, generator=torch.manual_seed(seed))

    def run(
        model,
        noise,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        latent_image,
        denoise=1.0,
        noise_mask=None,
        callback=None,
        disable_pbar=False,
        seed=None,
        **rest,
    ):
        calls.append(
            dict(
                model=model,
                steps=steps,
                cfg=cfg,
                sampler_name=sampler_name,
                scheduler=scheduler,
                positive=positive,
                negative=negative,
                denoise=denoise,
                seed=seed,
                mask=noise_mask,
                latent_shape=tuple(latent_image.shape),
                noise_shape=tuple(noise.shape),
            )
        )
        for step in range(steps):
            callback(step, latent_image, latent_image, steps)
        mask = torch.nn.functional.interpolate(noise_mask, size=latent_image.shape[-2:], mode="bilinear")
        return latent_image + denoise * mask

    sample.sample = run
    monkeypatch.setitem(sys.modules, "comfy.sample", sample)
    return calls


def test_face_detailer_drives_comfy_sampling_and_leaves_the_rest_untouched(comfy_sampling):
    from comfy_nodes.detailer import ComfySampler
    from headshot.sampling.protocol import Sampler

    model = types.SimpleNamespace(model=types.SimpleNamespace(model_config=type("SD15", (), {})()))
    positive, negative, vae = [["cond+", {}]], [["cond-", {}]], StandInVAE()
    assert isinstance(ComfySampler(model, positive, negative, vae, "euler", "normal"), Sampler)
    photo = astronaut_shots()["astronaut.png"]
    cls = NODE_CLASS_MAPPINGS["HeadshotFaceDetailer"]
    result = cls().detail(
        pil_to_image_batch([photo, photo]),
        model,
        positive,
        negative,
        vae,
        7,
        12,
        6.5,
        "dpmpp_2m",
        "karras",
        0.45,
        256,
        "largest",
        0,
        "dlib",
    )
    _check_outputs(cls, result)
    image, report = result
    assert report.splitlines() == ["picture 1: 1 face(s) found, 1 repainted", "picture 2: 1 face(s) found, 1 repainted"]
    first, second = comfy_sampling
    assert first["model"] is model and first["positive"] is positive and first["negative"] is negative
    assert (first["steps"], first["cfg"], first["sampler_name"], first["scheduler"]) == (12, 6.5, "dpmpp_2m", "karras")
    assert (first["denoise"], first["seed"], second["seed"]) == (0.45, 7, 8)  # seed + picture index
    assert vae.encoded == [(1, 256, 256, 3)] * 2 and first["latent_shape"] == first["noise_shape"] == (1, 4, 32, 32)
    mask = first["mask"]
    assert mask.shape == (1, 1, 256, 256) and set(torch.unique(mask).tolist()) == {0.0, 1.0}
    out = np.asarray(image_batch_to_pils(image)[0]).astype(int)
    changed = np.any(out != np.asarray(photo), axis=-1)
    ys, xs = np.nonzero(changed)
    face_center = (220, 120)  # dlib's astronaut face box is about (175, 76)-(266, 167)
    assert changed.sum() > 1000 and abs(xs.mean() - face_center[0]) < 20 and abs(ys.mean() - face_center[1]) < 20
    assert not changed[:, :150].any() and not changed[230:].any()  # nothing far from the face moved


def test_face_detailer_nth_from_left_picks_one_face_of_a_group(comfy_sampling):
    from headshot.faces.dlib_backend import DlibFaceAnalyzer
    from headshot.faces.subject import confident_faces
    from headshot.finish.detailer import choose_faces

    group = insightface_image("t1.jpg")
    faces = confident_faces(DlibFaceAnalyzer().detect(np.asarray(group)))
    assert len(faces) >= 2
    leftmost = min(faces, key=lambda f: f.center[0])
    assert choose_faces(faces, "nth from left", 0) == [leftmost]
    assert choose_faces(faces, "nth from left", 99) == [] and len(choose_faces(faces, "all", 0)) == len(faces)


def test_face_detailer_reads_its_lora_file_once_for_all_faces_of_the_batch(comfy_sampling, monkeypatch):
    """Group photo, every face repainted with lora_name: one read of the file (ComfyUI's load_torch_file)
    and one patched model for the whole run, not one per face."""
    reads, patched = [], []
    utils = sys.modules["comfy.utils"]
    monkeypatch.setattr(
        utils, "load_torch_file", lambda path, safe_load=False: reads.append(path) or {"w": path}, raising=False
    )
    sd = types.ModuleType("comfy.sd")  # STAND-IN: LoraLoader's load_lora_for_models gives a patched clone

    def load_lora_for_models(model, clip, lora, strength_model, strength_clip):
        patched.append((model, lora["w"], strength_model))
        return types.SimpleNamespace(base=model, lora=lora["w"]), clip

    sd.load_lora_for_models = load_lora_for_models
    monkeypatch.setitem(sys.modules, "comfy.sd", sd)
    loras = Path(sys.modules["folder_paths"].folder_names_and_paths["loras"][0][0])
    (loras / "person.safetensors").write_bytes(b"stand-in: only its path is used")
    model = types.SimpleNamespace(model=types.SimpleNamespace(model_config=type("SD15", (), {})()))
    group = insightface_image("t1.jpg").convert("RGB")
    cls = NODE_CLASS_MAPPINGS["HeadshotFaceDetailer"]
    assert "person.safetensors" in cls.INPUT_TYPES()["optional"]["lora_name"][0]
    _, report = cls().detail(
        pil_to_image_batch([group, group]),
        model,
        [["c+", {}]],
        [["c-", {}]],
        StandInVAE(),
        0,
        2,
        5.0,
        "euler",
        "normal",
        0.4,
        256,
        "all",
        0,
        "dlib",
        lora_name="person.safetensors",
        lora_strength=0.7,
    )
    repainted = [int(line.split(", ")[1].split()[0]) for line in report.splitlines()]
    assert repainted[0] >= 2 and len(comfy_sampling) == sum(repainted)  # several faces, each sampled ...
    assert reads == [str(loras / "person.safetensors")] and patched == [(model, reads[0], 0.7)]  # ... one read
    assert {id(call["model"]) for call in comfy_sampling} == {id(comfy_sampling[0]["model"])}
    assert comfy_sampling[0]["model"].lora == reads[0]  # the faces were sampled with the LoRA applied


# ---------------------------------------------------------------------------------------------
# Train Identity LoRA on a tiny random SD1 model: progress, cancel, resume, reuse, LoraLoader name


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import tiny_models

    folder = tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))
    return tiny_models.save_single_file(folder, tmp_path_factory.mktemp("ckpt") / "tiny_sd1.safetensors", "sd1")


@pytest.fixture
def tiny_dataset(comfy_host):
    root = comfy_host.base / "output" / "my_datasets" / "dataset"  # path widgets reach only ComfyUI's folders
    subset = root / "img" / "10_ohwx woman"
    subset.mkdir(parents=True)
    for i, name in enumerate(["astronaut.png", "astronaut_closeup.jpg", "astronaut_mirrored.jpg"]):
        astronaut_shots()[name].convert("RGB").resize((512, 512)).save(subset / f"{i:02d}.png")
        (subset / f"{i:02d}.txt").write_text("ohwx woman, orange spacesuit")
    (root / "report.json").write_text(json.dumps({"trigger": "ohwx", "class": "woman", "photos": []}))
    return root


def test_train_node_cancels_on_interrupt_resumes_then_reuses_the_finished_job(
    comfy_host, tiny_checkpoint, tiny_dataset, monkeypatch
):
    import shutil

    from headshot.train.job import JobFolder

    shutil.copy(tiny_checkpoint, comfy_host.base / "models" / "checkpoints" / "tiny_sd1.safetensors")
    cls = NODE_CLASS_MAPPINGS["HeadshotTrainLora"]
    assert cls.INPUT_TYPES()["required"]["ckpt_name"][0] == ["tiny_sd1.safetensors"]
    args = dict(
        dataset_path=str(tiny_dataset),
        ckpt_name="tiny_sd1.safetensors",
        output_name="zoe",
        preset="fast",
        steps=40,
        rank=4,
        learning_rate=1e-3,
        resolution=32,
        training_seed=1,
        validation_images=0,
        face_backend="dlib",
    )
    first_hash = cls.IS_CHANGED(**args)
    assert cls.IS_CHANGED(**args) == first_hash and cls.IS_CHANGED(**{**args, "rank": 8}) != first_hash

    comfy_host.state["interrupt_after_updates"] = 1  # press Cancel once training is under way
    with pytest.raises(InterruptProcessingException):
        cls().train(**args)
    assert comfy_host.calls[:2] == ["unload_all_models", "soft_empty_cache"]  # freed before the worker started
    job_dir = next((host.jobs_root() / "jobs").iterdir())
    record = JobFolder(job_dir).read()
    assert record["state"] == "cancelled" and 0 < record["steps_done"] < 40

    comfy_host.state["interrupt_after_updates"] = None
    result = cls().train(**args)  # resumes from the saved checkpoint
    _check_outputs(cls, result)
    lora_name, loss, samples, summary = result
    assert lora_name == os.path.join("headshot", "zoe.safetensors")
    assert lora_name in comfy_host.folder_paths.get_filename_list("loras")  # LoraLoader lists it
    installed = comfy_host.base / "models" / "loras" / lora_name
    assert installed.with_suffix(".identity.json").is_file() and installed.with_suffix(".json").is_file()
    record = JobFolder(job_dir).read()
    assert record["state"] == "done" and record["steps_done"] == 40
    assert any(e["type"] == "resumed" for e in JobFolder(job_dir).events()[0])
    assert "ohwx woman" in summary and samples.shape[0] == 1  # a note: validation was off

    monkeypatch.setattr("headshot.train.launch.start_worker", lambda *a, **k: pytest.fail("trained again"))
    again = cls().train(**args)
    assert again[0] == lora_name and "reused the finished job" in again[3]
    (tiny_dataset / "img" / "10_ohwx woman" / "00.txt").write_text("ohwx woman, a new caption")
    assert cls.IS_CHANGED(**args) != first_hash  # a changed dataset file means training again


# ---------------------------------------------------------------------------------------------
# job routes on ComfyUI's server


def test_job_routes_register_on_promptserver_and_answer(comfy_host, monkeypatch, tmp_path):
    from comfy_nodes import routes
    from headshot.train.job import JobFolder

    registered = {}

    class StandInRoutes:  # STAND-IN for aiohttp's RouteTableDef on ComfyUI's PromptServer.instance
        def get(self, path):
            return lambda handler: registered.setdefault(("GET", path), handler)

        def post(self, path):
            return lambda handler: registered.setdefault(("POST", path), handler)

    assert routes.register_routes() is False  # no server module: nothing registered
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(routes=StandInRoutes()))
    monkeypatch.setitem(sys.modules, "server", server)
    assert routes.register_routes() is True
    assert set(registered) == {
        ("GET", "/headshot/jobs"),
        ("GET", "/headshot/jobs/{name}"),
        ("POST", "/headshot/jobs/{name}/cancel"),
    }

    web = types.SimpleNamespace(json_response=lambda body, status=200: (status, body))
    monkeypatch.setitem(sys.modules, "aiohttp", types.SimpleNamespace(web=web))  # STAND-IN: what a response holds

    def call(method, path, name=None, **query):  # a request as aiohttp hands it to the handler
        request = types.SimpleNamespace(match_info={"name": name}, rel_url=types.SimpleNamespace(query=query))
        return asyncio.run(registered[(method, path)](request))

    name = "zoe-0123456789ab"
    job = JobFolder(host.jobs_root() / "jobs" / name)
    job.write({"state": "running", "steps_done": 3})
    for step in range(1, 4):
        job.emit("step", step=step, total=10, loss=0.1)
    with job.lock():  # its worker, alive
        status, body = call("GET", "/headshot/jobs/{name}", name, events="2")
        assert status == 200 and body["job"]["state"] == "running" and [e["step"] for e in body["events"]] == [2, 3]
        listed = {"name": name, "state": "running", "steps_done": 3, "lora": None}
        assert call("GET", "/headshot/jobs") == (200, {"jobs": [listed]})
        cancelled = {"name": name, "cancel_requested": True, "state": "running"}
        assert call("POST", "/headshot/jobs/{name}/cancel", name) == (200, cancelled)
        assert job.cancel_requested()
    job.cancel_path.unlink()
    job.update(state="done")
    status, body = call("POST", "/headshot/jobs/{name}/cancel", name)
    assert status == 200 and not body["cancel_requested"] and not job.cancel_requested()
    status, body = call("GET", "/headshot/jobs/{name}", "../etc")
    assert status == 400 and "job name" in body["error"]
    status, body = call("GET", "/headshot/jobs/{name}", "nobody")
    assert status == 404 and "no training job called 'nobody'" in body["error"]
