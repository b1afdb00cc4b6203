"""The AUTOMATIC1111 / Forge glue's own logic: processing objects, ControlNet units, LoRA install, callbacks.

The WebUI is not running in tests, so a fake `modules` package stands in for the few WebUI functions the
glue calls (processing classes that record their arguments, shared options, the Lora network list). The
glue's logic and the core it calls run for real; the real hosts are checked with shared/hosts/.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from headshot.errors import HeadshotError
from headshot.sampling.protocol import LoraWeight, MaskedImageToImage, TextToImage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Recorded:
    """A processing class that keeps what it was built with (as the WebUI's dataclasses do)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.__dict__.update(kwargs)
        self.scripts = None
        self.script_args = None


class Txt2Img(Recorded):
    pass


class Img2Img(Recorded):
    pass


def _module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


@pytest.fixture
def webui(tmp_path, monkeypatch):
    """A stand-in WebUI: data folder, models/Lora, shared options and state, processing that draws grey."""
    data = tmp_path / "webui"
    (data / "models" / "Lora").mkdir(parents=True)
    drawn: list = []

    def process_images(p):
        drawn.append(p)
        size = (p.width, p.height)
        return SimpleNamespace(images=[Image.new("RGB", size, (128, 128, 128))])

    state = SimpleNamespace(
        interrupted=False, sampling_step=0, sampling_steps=0, begin=lambda job: None, end=lambda: None
    )
    _module(monkeypatch, "modules")
    _module(monkeypatch, "modules.paths_internal", data_path=str(data), models_path=str(data / "models"))
    shared = _module(
        monkeypatch,
        "modules.shared",
        cmd_opts=SimpleNamespace(lora_dir=str(data / "models" / "Lora")),
        opts=SimpleNamespace(outdir_samples="", outdir_txt2img_samples=str(data / "outputs" / "txt2img-images")),
        sd_model=SimpleNamespace(is_sdxl=False, is_sd2=False, is_sd1=True),
        state=state,
    )
    processing = _module(
        monkeypatch,
        "modules.processing",
        StableDiffusionProcessingTxt2Img=Txt2Img,
        StableDiffusionProcessingImg2Img=Img2Img,
        process_images=process_images,
    )
    refreshed: list = []
    _module(monkeypatch, "networks", list_available_networks=lambda: refreshed.append(True))
    return SimpleNamespace(data=data, shared=shared, processing=processing, drawn=drawn, refreshed=refreshed)


def test_txt2img_prompt_carries_the_lora_by_its_file_stem_and_a1111_sampler_names(webui):
    from a1111_extension.sampler import WebUISampler

    sampler = WebUISampler()
    request = TextToImage(
        prompt="photo of ohwx man",
        negative="blurry",
        width=515,
        height=768,
        steps=20,
        cfg=6.5,
        seed=7,
        sampler="dpmpp_2m_karras",
        loras=[LoraWeight(str(webui.data / "models/Lora/headshot/alice.safetensors"), 0.8)],
    )
    p = sampler.txt2img_processing(request)
    assert p.prompt == "photo of ohwx man, <lora:alice:0.8>"
    assert (p.sampler_name, p.scheduler) == ("DPM++ 2M", "Karras")
    assert (p.width, p.height, p.seed, p.steps, p.cfg_scale) == (512, 768, 7, 20, 6.5)
    assert p.negative_prompt == "blurry" and p.batch_size == 1 and p.n_iter == 1
    picture = sampler.text_to_image(request)
    assert picture.size == (512, 768) and [d.prompt for d in webui.drawn] == [p.prompt]
    assert sampler.family == "sd1"


def test_masked_request_inpaints_only_the_masked_area_with_the_mask_given(webui):
    from a1111_extension.sampler import MASK_BLUR, WebUISampler

    image = Image.new("RGB", (300, 300), "white")
    mask = Image.new("L", (300, 300), 0)
    request = MaskedImageToImage(image, mask, "ohwx man face", "", steps=12, cfg=5.0, seed=3, denoise=0.35)
    sampler = WebUISampler()
    p = sampler.img2img_processing(request)
    assert p.init_images[0].size == (300, 300) and p.mask.mode == "L"
    assert p.inpaint_full_res is True and p.mask_blur == MASK_BLUR and p.inpainting_fill == 1
    assert p.denoising_strength == pytest.approx(0.35) and p.do_not_save_samples is True
    assert (p.width, p.height) == (296, 296)
    # the detailer pastes by size: the WebUI's multiple-of-8 picture comes back at the crop's size
    assert sampler.masked_image_to_image(request).size == (300, 300)


def test_family_comes_from_the_loaded_model(webui):
    from a1111_extension import host

    webui.shared.sd_model = SimpleNamespace(is_sdxl=True, is_sd2=False)
    assert host.model_family() == "sdxl"


def test_an_interrupted_picture_is_a_cancel_not_a_picture(webui):
    from a1111_extension.sampler import WebUISampler

    webui.shared.state.interrupted = True
    with pytest.raises(HeadshotError) as err:
        WebUISampler().text_to_image(TextToImage("x", "", 64, 64, 1, 1.0, 0))
    assert err.value.code == "cancelled"


@dataclass
class FakeUnit:
    enabled: bool = True
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: object = None
    pixel_perfect: bool = False


class FakeControlNetScript:
    args_from, args_to = 3, 6

    def title(self):
        return "ControlNet"


def _controlnet(monkeypatch, models):
    runner = SimpleNamespace(alwayson_scripts=[FakeControlNetScript()])

    class ScriptRunner:
        def __init__(self):
            self.scripts, self.alwayson_scripts = [], []

    _module(monkeypatch, "modules.scripts", scripts_txt2img=runner, ScriptRunner=ScriptRunner)
    _module(
        monkeypatch,
        "sd_webui_controlnet.scripts.external_code",
        ControlNetUnit=FakeUnit,
        get_models=lambda update=False: list(models),
    )


def test_pose_goes_to_the_controlnet_script_alone_as_an_openpose_unit(webui, monkeypatch):
    from a1111_extension.controlnet import OpenPoseUnit, availability
    from a1111_extension.sampler import WebUISampler

    _controlnet(monkeypatch, ["control_v11p_sd15_canny [d14c016b]", "control_v11p_sd15_openpose [cab727d4]"])
    assert availability("sd1") == (True, "pose through ControlNet model control_v11p_sd15_openpose [cab727d4]")
    skeleton = Image.new("RGB", (512, 512))
    request = TextToImage("x", "", 512, 512, 20, 7.0, 1, control_image=skeleton, control_strength=0.9)
    p = WebUISampler(control_unit=OpenPoseUnit.find("sd1")).txt2img_processing(request)
    assert [s.title() for s in p.scripts.alwayson_scripts] == ["ControlNet"]
    unit, *rest = p.script_args[3:6]
    assert unit.enabled and unit.module == "none" and unit.model.startswith("control_v11p_sd15_openpose")
    assert unit.weight == pytest.approx(0.9) and np.asarray(unit.image).shape == (512, 512, 3)
    assert [u.enabled for u in rest] == [False, False] and p.script_args[:3] == [0, None, None]


def test_without_controlnet_pose_is_off_with_what_to_install(webui):
    from a1111_extension.controlnet import MISSING, OpenPoseUnit, availability

    assert availability("sd1") == (False, MISSING)
    assert "sd-webui-controlnet" in MISSING and OpenPoseUnit.find("sd1") is None


def _fake_lora(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lora = folder / f"{name}.safetensors"
    lora.write_bytes(content)
    lora.with_suffix(".json").write_text(json.dumps({"activation text": "ohwx man", "preferred weight": 0.8}))
    return lora


def test_install_puts_lora_sidecar_and_preview_in_lora_headshot_without_replacing_anyones_file(webui, tmp_path):
    from a1111_extension.training import install_lora

    lora = _fake_lora(tmp_path / "job", "alice", b"trained weights")
    preview = tmp_path / "sample.png"
    Image.new("RGB", (640, 640), "red").save(preview)
    folder = webui.data / "models" / "Lora" / "headshot"
    folder.mkdir(parents=True)
    (folder / "alice.safetensors").write_bytes(b"the person's own alice")  # someone's file of that name

    target = install_lora(lora, "alice", preview)
    assert target == folder / "alice-2.safetensors" and target.read_bytes() == b"trained weights"
    assert (folder / "alice.safetensors").read_bytes() == b"the person's own alice"
    assert json.loads(target.with_suffix(".json").read_text())["activation text"] == "ohwx man"
    with Image.open(target.with_suffix(".preview.png")) as card:
        assert card.size == (512, 512)
    assert webui.refreshed == [True]  # the Extra Networks list was rescanned

    # installed again (a reused job): the same name, and a sidecar edited in the card editor stays
    target.with_suffix(".json").write_text('{"activation text": "edited"}')
    assert install_lora(lora, "alice", preview) == target
    assert json.loads(target.with_suffix(".json").read_text()) == {"activation text": "edited"}


def test_card_picture_is_a_training_crop_when_there_are_no_validation_samples(tmp_path):
    from a1111_extension.training import preview_source

    crop = tmp_path / "ds" / "img" / "10_ohwx man" / "0001.png"
    crop.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(crop)
    assert preview_source(tmp_path / "job", [], tmp_path / "ds") == crop
    assert preview_source(tmp_path / "job", [tmp_path / "s.png"], tmp_path / "ds") == tmp_path / "s.png"


def test_before_training_the_webui_model_is_unloaded_and_the_tabs_face_analyzers_dropped(webui, monkeypatch):
    """An onnxruntime CUDA session (insightface) holds its arena on the card while it lives; the training worker
    shares that card with the WebUI's process."""
    import gc
    import weakref

    from a1111_extension import photos
    from a1111_extension.training import free_webui_memory

    unloaded: list = []
    _module(monkeypatch, "modules.sd_models", unload_model_weights=lambda: unloaded.append(True))
    kept = weakref.ref(photos.face_analyzer("dlib"))  # Prepare ran before: the tab keeps its analyzer
    free_webui_memory()
    gc.collect()
    assert unloaded == [True] and kept() is None


def test_resume_refuses_when_no_stopped_job_matches(webui, tmp_path):
    from a1111_extension.training import TrainingSession

    settings = SimpleNamespace(out_dir=str(tmp_path / "jobs" / "none-yet"))
    with pytest.raises(HeadshotError) as err:
        TrainingSession().start(settings, tmp_path, resume=True)
    assert err.value.code == "nothing_to_resume"


def test_callbacks_register_once_per_set_and_never_outside_a_webui(monkeypatch):
    import a1111_extension

    monkeypatch.delitem(sys.modules, "modules.script_callbacks", raising=False)
    assert a1111_extension.register() is False
    callback_map: dict = {"callbacks_ui_tabs": [], "callbacks_app_started": []}

    def add(key):
        return lambda fn: callback_map[key].append(SimpleNamespace(callback=fn))

    _module(
        monkeypatch,
        "modules.script_callbacks",
        callback_map=callback_map,
        on_ui_tabs=add("callbacks_ui_tabs"),
        on_app_started=add("callbacks_app_started"),
    )
    assert a1111_extension.register() and a1111_extension.register()
    assert len(callback_map["callbacks_ui_tabs"]) == 1 and len(callback_map["callbacks_app_started"]) == 1


def test_captions_edited_in_the_tab_are_saved_and_must_keep_the_trigger(tmp_path):
    from a1111_extension.photos import captions, save_captions

    subset = tmp_path / "ds" / "img" / "10_ohwx man"
    subset.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(subset / "0001.png")
    (subset / "0001.txt").write_text("ohwx man, smiling\n")
    assert captions(tmp_path / "ds") == [["0001.png", "ohwx man, smiling"]]
    assert save_captions(tmp_path / "ds", [["0001.png", "ohwx man, glasses,  outdoors"]]) == 1
    assert (subset / "0001.txt").read_text() == "ohwx man, glasses, outdoors\n"
    with pytest.raises(HeadshotError) as err:
        save_captions(tmp_path / "ds", [["0001.png", "a man"]])
    assert err.value.code == "invalid_trigger" and (subset / "0001.txt").read_text().startswith("ohwx")
    with pytest.raises(HeadshotError):
        save_captions(tmp_path / "ds", [["../0001.png", "ohwx"]])


def test_training_progress_shows_a_bar_the_step_and_the_time_left():
    from a1111_extension.training import BAR_WIDTH, Progress

    text = Progress("running", "training", step=3, total=10, eta_s=125.0).text().splitlines()
    assert text[1] == "█" * (BAR_WIDTH * 3 // 10) + "░" * (BAR_WIDTH - BAR_WIDTH * 3 // 10) + " step 3 of 10 (30%)"
    assert text[2] == "about 2 min 5 s left"


def test_training_logs_a_worker_that_crashed_after_recording_its_end(tmp_path, caplog):
    import logging

    from train_fixtures import finished_run_whose_worker_aborted

    from a1111_extension.training import TrainingSession

    run = finished_run_whose_worker_aborted(tmp_path / "job")
    with caplog.at_level(logging.WARNING):
        record = TrainingSession()._follow(run)
    assert record["state"] == "done" and f"exit code {run.process.returncode}" in record["worker_exit_warning"]
    assert record["worker_exit_warning"] in caplog.text  # in the WebUI's console; the tab's message has it too
