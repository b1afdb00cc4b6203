"""One photo on AUTOMATIC1111 / Forge: the IP-Adapter FaceID unit the glue builds for the ControlNet extension.

The WebUI is not running here: stand-ins for each host's `external_code.ControlNetUnit` take the real
constructors' keywords and make their checks (sd-webui-controlnet's internal_controlnet/args.py: a pydantic
model whose module and model must be in the extension's lists, weight 0-2, unknown fields ignored; Forge's
lib_controlnet/external_code.py: a dataclass, so an unknown keyword is a TypeError). The glue, the core's
photo screening, ranking and dlib run for real on real photos; what a FaceID unit does to a picture is the
WebUI's, checked on the real hosts (shared/hosts/): on A1111 1.10.1 with sd-webui-controlnet 1.1.455 the tab's
own Generate built this unit, the extension ran ip-adapter_face_id (insightface 0.7.3, buffalo_l) and applied
ip-adapter-faceid_sd15 (tools/webui_faceid_check.py says how to repeat it). On Forge (2025-06 snapshot) the same
Generate ran "InsightFace+CLIP-H (IPAdapter)" (buffalo_l from models/insightface, CLIP-H from
models/ControlNetPreprocessor) and its IPAdapterPatcher patched the UNet; the Forge stand-ins below make the checks
its ControlNet script made on that unit.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from headshot.errors import HeadshotError
from headshot.samples import astronaut_shots
from headshot.sampling.protocol import MaskedImageToImage, TextToImage
from tests.test_a1111_glue import _module, webui  # noqa: F401  (the fixture)

A1111_MODULES = ["none", "openpose", "ip-adapter_clip_sd15", "ip-adapter_face_id", "ip-adapter_face_id_plus"]
OPENPOSE = "control_v11p_sd15_openpose [cab727d4]"
FACEID = "ip-adapter-faceid_sd15 [0a1757e9]"
PLUS_V2 = "ip-adapter-faceid-plusv2_sd15 [6e14fc1a]"
FORGE_PREPROCESSORS = ["None", "CLIP-ViT-H (IPAdapter)", "InsightFace+CLIP-H (IPAdapter)", "InsightFace (InstantID)"]


def a1111_unit_class(models: list[str]):
    class ControlNetUnit:
        """sd-webui-controlnet's ControlNetUnit: keyword fields, module/model/weight checked, extras ignored."""

        def __init__(
            self,
            *,
            enabled=False,
            module="none",
            model="None",
            weight=1.0,
            image=None,
            resize_mode="Crop and Resize",
            processor_res=-1,
            threshold_a=-1,
            threshold_b=-1,
            guidance_start=0.0,
            guidance_end=1.0,
            pixel_perfect=False,
            control_mode="Balanced",
            inpaint_crop_input_image=True,
            **ignored,
        ):
            if module not in A1111_MODULES:
                raise ValueError(f"module({module}) not found in supported modules.")
            if model != "None" and model not in models:
                raise ValueError(f"model({model}) not found in supported models.")
            if not 0.0 <= weight <= 2.0:
                raise ValueError("weight: ensure this value is less than or equal to 2.0")
            self.__dict__.update({k: v for k, v in locals().items() if k not in ("self", "ignored")})

    return ControlNetUnit


@dataclass
class ForgeUnit:
    """Forge's lib_controlnet ControlNetUnit: a dataclass (an unknown keyword is a TypeError), fields and defaults
    as in its external_code.py."""

    input_mode: str = "simple"
    use_preview_as_input: bool = False
    generated_image: object = None
    mask_image: object = None
    mask_image_fg: object = None
    hr_option: str = "Both"
    enabled: bool = True
    module: str = "None"
    model: str = "None"
    weight: float = 1.0
    image: object = None
    image_fg: object = None
    resize_mode: object = "Crop and Resize"
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: object = "Balanced"
    save_detected_map: bool = True


def forge_script_reads(unit: ForgeUnit, models: list[str]) -> np.ndarray:
    """What Forge's scripts/controlnet.py does with an enabled unit before any model runs: the preprocessor by
    name (global_state.get_preprocessor; an unknown one is None and fails), the model's file by name
    (get_controlnet_filename: a KeyError), the image as an HWC numpy array ("controlnet is enabled but no input
    image is given" otherwise). -> the image its preprocessor gets."""
    if unit.module not in FORGE_PREPROCESSORS:
        raise AttributeError(f"'NoneType' object has no attribute 'slider_resolution' ({unit.module})")
    if unit.module != "None" and unit.model not in models:
        raise KeyError(unit.model)
    if unit.use_preview_as_input or not isinstance(unit.image, np.ndarray):
        raise ValueError("controlnet is enabled but no input image is given")
    assert unit.image.ndim == 3 and unit.image.shape[2] == 3 and unit.image.dtype == np.uint8
    return unit.image


class ControlNetScript:
    def __init__(self, args_from=3, args_to=6):
        self.args_from, self.args_to = args_from, args_to

    def title(self):
        return "ControlNet"


def _scripts(monkeypatch, slots: int = 3):
    class ScriptRunner:
        def __init__(self):
            self.scripts, self.alwayson_scripts = [], []

    txt2img = SimpleNamespace(alwayson_scripts=[ControlNetScript(3, 3 + slots)])
    img2img = SimpleNamespace(alwayson_scripts=[ControlNetScript(5, 5 + slots)])
    _module(monkeypatch, "modules.scripts", scripts_txt2img=txt2img, scripts_img2img=img2img, ScriptRunner=ScriptRunner)
    return txt2img, img2img


def a1111(monkeypatch, models, slots: int = 3):
    _scripts(monkeypatch, slots)
    return _module(
        monkeypatch,
        "sd_webui_controlnet.scripts.external_code",
        ControlNetUnit=a1111_unit_class(models),
        get_models=lambda update=False: list(models),
        get_modules=lambda alias_names=False: list(A1111_MODULES),
    )


def forge(monkeypatch, models):
    _scripts(monkeypatch)
    _module(
        monkeypatch,
        "lib_controlnet.global_state",
        get_all_controlnet_names=lambda: ["None", *models],
        update_controlnet_filenames=lambda: None,
        get_all_preprocessor_names=lambda: list(FORGE_PREPROCESSORS),
    )
    return _module(monkeypatch, "lib_controlnet.external_code", ControlNetUnit=ForgeUnit)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "me.jpg"
    astronaut_shots()["astronaut_closeup.jpg"].save(path)
    return path


def _faceid_lora(webui, name="ip-adapter-faceid-plusv2_sd15_lora"):  # noqa: F811
    lora = webui.data / "models" / "Lora" / f"{name}.safetensors"
    lora.write_bytes(b"a FaceID LoRA")
    return lora


def test_a1111_faceid_unit_rides_beside_the_pose_unit_with_its_preprocessor_model_weight_and_photo(
    webui,  # noqa: F811
    monkeypatch,
    photo,
):
    from a1111_extension.controlnet import OpenPoseUnit
    from a1111_extension.identity_adapter import FaceIDUnit, availability
    from a1111_extension.sampler import WebUISampler

    a1111(monkeypatch, [OPENPOSE, FACEID, PLUS_V2])
    _faceid_lora(webui)
    ok, note = availability("sd1")
    assert ok and PLUS_V2 in note and "ip-adapter_face_id_plus" in note and "ip-adapter-faceid-plusv2_sd15_lora" in note
    faceid = FaceIDUnit.for_photo(photo, "sd1", weight=0.7)
    sampler = WebUISampler(control_unit=OpenPoseUnit.find("sd1"), identity_unit=faceid)
    request = TextToImage("photo of a person", "", 512, 512, 20, 7.0, 1, control_image=Image.new("RGB", (512, 512)))
    p = sampler.txt2img_processing(request)
    pose, unit, spare = p.script_args[3:6]
    assert (pose.module, pose.model, pose.enabled) == ("none", OPENPOSE, True)
    assert (unit.module, unit.model, unit.enabled) == ("ip-adapter_face_id_plus", PLUS_V2, True)
    assert unit.weight == pytest.approx(0.7) and unit.inpaint_crop_input_image is False
    with Image.open(photo) as original:  # the photo itself: the WebUI's preprocessor finds the face
        assert np.array_equal(unit.image, np.asarray(original.convert("RGB")))
    assert spare.enabled is False
    # the FaceID LoRA goes in the prompt, as sd-webui-controlnet expects
    assert p.prompt == "photo of a person, <lora:ip-adapter-faceid-plusv2_sd15_lora:0.6>"


def test_plain_faceid_takes_the_plain_preprocessor_and_without_its_lora_the_prompt_is_unchanged(
    webui,  # noqa: F811
    monkeypatch,
    photo,
):
    from a1111_extension.identity_adapter import FaceIDUnit
    from a1111_extension.sampler import WebUISampler

    a1111(monkeypatch, [FACEID])
    sampler = WebUISampler(identity_unit=FaceIDUnit.for_photo(photo, "sd1"))
    p = sampler.txt2img_processing(TextToImage("portrait", "", 512, 512, 20, 7.0, 1))
    unit, *spare = p.script_args[3:6]  # no pose: the FaceID unit alone
    assert (unit.module, unit.model, unit.weight) == ("ip-adapter_face_id", FACEID, 0.8)
    assert [u.enabled for u in spare] == [False, False] and p.prompt == "portrait"


def test_the_detailer_repaint_carries_the_same_faceid_unit_on_img2img(webui, monkeypatch, photo):  # noqa: F811
    from a1111_extension.identity_adapter import FaceIDUnit
    from a1111_extension.sampler import WebUISampler

    a1111(monkeypatch, [PLUS_V2])
    _faceid_lora(webui)
    sampler = WebUISampler(identity_unit=FaceIDUnit.for_photo(photo, "sd1"))
    crop = MaskedImageToImage(Image.new("RGB", (256, 256)), Image.new("L", (256, 256)), "face", "", 12, 5.0, 3, 0.4)
    p = sampler.img2img_processing(crop)
    unit = p.script_args[5]  # the img2img runner's ControlNet arguments
    assert (unit.module, unit.model) == ("ip-adapter_face_id_plus", PLUS_V2)
    assert p.prompt.endswith("<lora:ip-adapter-faceid-plusv2_sd15_lora:0.6>")


def test_forge_takes_its_insightface_clip_preprocessor_and_the_families_model(webui, monkeypatch, photo):  # noqa: F811
    from a1111_extension.controlnet import OpenPoseUnit
    from a1111_extension.identity_adapter import FORGE_FACEID, FaceIDUnit
    from a1111_extension.sampler import WebUISampler

    sdxl_pose, sdxl_faceid = "thibaud_xl_openpose [c7b9cadd]", "ip-adapter-faceid-plusv2_sdxl [187cb962]"
    models = [OPENPOSE, PLUS_V2, sdxl_pose, sdxl_faceid]
    forge(monkeypatch, models)
    faceid = FaceIDUnit.for_photo(photo, "sdxl")
    sampler = WebUISampler("sdxl", control_unit=OpenPoseUnit.find("sdxl"), identity_unit=faceid)
    p = sampler.txt2img_processing(TextToImage("x", "", 1024, 1024, 20, 7.0, 1, control_image=Image.new("RGB", (8, 8))))
    pose, unit, spare = p.script_args[3:6]
    assert (pose.module, pose.model) == ("None", sdxl_pose)
    assert isinstance(unit, ForgeUnit) and (unit.module, unit.model) == (FORGE_FACEID, sdxl_faceid)
    # Forge's script accepts both units and hands the preprocessor the photo itself
    forge_script_reads(pose, models)
    with Image.open(photo) as original:
        assert np.array_equal(forge_script_reads(unit, models), np.asarray(original.convert("RGB")))
    assert spare.enabled is False


def test_forge_faceid_on_the_detailer_repaint_and_its_insightface_folder(webui, monkeypatch, photo):  # noqa: F811
    from a1111_extension.identity_adapter import FORGE_FACEID, FaceIDUnit, availability
    from a1111_extension.sampler import WebUISampler

    forge(monkeypatch, [FACEID])
    sampler = WebUISampler(identity_unit=FaceIDUnit.for_photo(photo, "sd1"))
    crop = MaskedImageToImage(Image.new("RGB", (256, 256)), Image.new("L", (256, 256)), "face", "", 12, 5.0, 3, 0.4)
    unit = sampler.img2img_processing(crop).script_args[5]  # the img2img runner's ControlNet arguments
    assert (unit.module, unit.model) == (FORGE_FACEID, FACEID) and forge_script_reads(unit, [FACEID]).shape[2] == 3
    ok, note = availability("sd1")  # no CLIP-H yet: Forge would download it at the first picture
    assert ok and "CLIP-ViT-H-14.safetensors" in note and "models/ControlNetPreprocessor" in note
    clip_h = webui.data / "models" / "ControlNetPreprocessor" / "CLIP-ViT-H-14.safetensors"
    clip_h.parent.mkdir(parents=True)
    clip_h.write_bytes(b"CLIP-H")
    assert "download" not in availability("sd1")[1]
    # Forge's InsightFaceLoader: FaceAnalysis("buffalo_l", root=<models>/insightface)
    monkeypatch.setitem(sys.modules, "insightface", None)
    ok, note = availability("sd1")
    assert not ok and str(webui.data / "models" / "insightface" / "models" / "buffalo_l") in note


def test_without_controlnet_a_faceid_model_or_insightface_one_photo_says_what_to_install(
    webui,  # noqa: F811
    monkeypatch,
    photo,
):
    from a1111_extension.identity_adapter import MISSING, NO_MODEL, FaceIDUnit, availability

    assert availability("sd1") == (False, MISSING) and "sd-webui-controlnet" in MISSING
    a1111(monkeypatch, [OPENPOSE, "ip-adapter-faceid-plusv2_sd15_lora [1234]"])  # a LoRA is not the adapter
    assert availability("sd1") == (False, NO_MODEL) and "models/ControlNet" in NO_MODEL
    with pytest.raises(HeadshotError) as err:
        FaceIDUnit.for_photo(photo, "sd1")
    assert err.value.code == "host_feature_missing" and str(err.value) == NO_MODEL
    a1111(monkeypatch, [FACEID])
    monkeypatch.setitem(sys.modules, "insightface", None)  # how Python reports a package that is not installed
    ok, note = availability("sd1")
    assert not ok and "pip install insightface" in note and "buffalo_l" in note


def test_pose_and_one_photo_on_a_single_controlnet_unit_say_which_setting_to_raise(
    webui,  # noqa: F811
    monkeypatch,
    photo,
):
    from a1111_extension.controlnet import OpenPoseUnit
    from a1111_extension.identity_adapter import FaceIDUnit
    from a1111_extension.sampler import WebUISampler

    a1111(monkeypatch, [OPENPOSE, FACEID], slots=1)
    sampler = WebUISampler(control_unit=OpenPoseUnit.find("sd1"), identity_unit=FaceIDUnit.for_photo(photo))
    with pytest.raises(HeadshotError, match="ControlNet unit number"):
        sampler.txt2img_processing(TextToImage("x", "", 64, 64, 1, 1.0, 0, control_image=Image.new("RGB", (8, 8))))


def test_a_reference_photo_prepare_would_refuse_stops_generate_before_any_picture(
    webui,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    from a1111_extension import photoshoot

    a1111(monkeypatch, [FACEID])
    blank = tmp_path / "wall.png"
    Image.new("RGB", (640, 640), (200, 190, 180)).save(blank)
    with pytest.raises(HeadshotError, match="reference photo refused") as err:
        photoshoot.generate("linkedin_corporate", photoshoot.NO_LORA, 2, 0, backend="dlib", reference=blank)
    assert err.value.code == "no_face" and webui.drawn == []


def draw_astronauts(webui):  # noqa: F811
    """The stand-in WebUI draws the astronaut (even seeds) or noise with no face (odd seeds)."""
    face = astronaut_shots()["astronaut.png"].convert("RGB")

    def process_images(p):
        webui.drawn.append(p)
        if p.seed % 2 == 0:
            return SimpleNamespace(images=[face.resize((p.width, p.height))])
        noise = np.random.default_rng(p.seed).integers(0, 255, (p.height, p.width, 3), dtype=np.uint8)
        return SimpleNamespace(images=[Image.fromarray(noise)])

    webui.processing.process_images = process_images


def test_one_photo_without_a_lora_draws_with_pose_and_faceid_and_ranks_against_the_photo(
    webui,  # noqa: F811
    monkeypatch,
    photo,
):
    from a1111_extension import photoshoot

    a1111(monkeypatch, [OPENPOSE, PLUS_V2])
    draw_astronauts(webui)
    results, out = photoshoot.generate(
        "linkedin_corporate", photoshoot.NO_LORA, 2, 0, 512, 512, pose=True, backend="dlib", reference=photo
    )
    for p in webui.drawn:
        units = [u for u in p.script_args[3:6] if u.enabled]
        assert [u.module for u in units] == ["none", "ip-adapter_face_id_plus"]
        assert "<lora:" not in p.prompt  # no identity LoRA, and no FaceID LoRA in models/Lora
    faced = [e for e in results if not e["faceless"]]
    assert len(faced) == 1 and faced[0]["seed"] == 0 and faced[0]["rank"] == 1
    assert faced[0]["identity_score"] > 0.5  # scored against the reference photo: the same person
    assert (out / "results.json").is_file()
