"""Face restoration (GFPGAN / CodeFormer through spandrel) on the real astronaut photo, dlib backend.

The real GFPGANv1.4 / CodeFormer weights cannot be downloaded here. The model files below hold
RANDOMLY INITIALISED weights of the real architectures (spandrel's own classes, default
constructors = the released files' layout, saved under "params_ema" as the released files are).
They prove loading, alignment and pasting, not restoration quality: a random model paints
coloured blobs where the face was.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from headshot.errors import BackendUnavailable, HeadshotError
from headshot.finish.restore import (
    FFHQ_EYES_512,
    find_restore_model,
    load_restore_model,
    restore_aligned,
    restore_faces,
)

spandrel = pytest.importorskip("spandrel", reason="face restoration needs spandrel (pip install spandrel)")


def _arch_class(module_name: str, *names: str):
    """An architecture class by its spandrel >= 0.4 name, or its older one (0.3 exported e.g. GFPGANv1Clean)."""
    import importlib

    module = importlib.import_module(module_name)
    return next(getattr(module, n) for n in names if hasattr(module, n))


def _save_random(module: torch.nn.Module, path, wrap: bool = True):
    path.parent.mkdir(parents=True, exist_ok=True)
    state = module.state_dict()
    torch.save({"params_ema": state} if wrap else state, path)
    return path


@pytest.fixture(scope="session")
def gfpgan_file(tmp_path_factory):
    """A GFPGANv1.4-layout file with random weights (GFPGANv1Clean, out_size 512, channel multiplier 2)."""
    GFPGAN = _arch_class("spandrel.architectures.GFPGAN", "GFPGAN", "GFPGANv1Clean")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("facerestore_models")
    return _save_random(GFPGAN(), folder / "GFPGANv1.4.pth")


@pytest.fixture(scope="session")
def gfpgan(gfpgan_file):
    return load_restore_model(gfpgan_file)


class IdentityFaceModel:
    """A stand-in FaceSR model that returns the aligned face unchanged and keeps what it was given."""

    purpose = "FaceSR"

    class architecture:  # noqa: N801 - mimics spandrel's descriptor.architecture
        id = name = "Identity"

    def __init__(self):
        self.model = torch.nn.Identity()
        self.inputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return x


def _face_disks(faces, shape, dilate: float = 3.0) -> np.ndarray:
    """Where pasting may change pixels: for each face, the disk around the aligned 512 square's
    footprint (worked out here from the eyes and the template, independently of the module)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    inside = np.zeros(shape[:2], bool)
    template = FFHQ_EYES_512 + 0.5
    for face in faces:
        eyes = np.asarray(face.eyes, np.float64) + 0.5
        scale = np.linalg.norm(template[1] - template[0]) / np.linalg.norm(eyes[1] - eyes[0])
        # the template's centre (256, 256) relative to its eye midpoint, turned and scaled into the photo
        ang = np.arctan2(*(eyes[1] - eyes[0])[::-1]) - np.arctan2(*(template[1] - template[0])[::-1])
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        centre = eyes.mean(0) + rot @ (np.array([256.0, 256.0]) - template.mean(0)) / scale
        radius = 256 * np.sqrt(2) / scale + dilate
        inside |= (xs + 0.5 - centre[0]) ** 2 + (ys + 0.5 - centre[1]) ** 2 <= radius**2
    return inside


# ---------------------------------------------------------------------------------------------
# loading


def test_gfpgan_loads_from_path_and_by_name_from_search_dir(gfpgan_file, gfpgan, tmp_path):
    assert gfpgan.purpose == "FaceSR" and gfpgan.architecture.id == "GFPGAN"
    elsewhere = tmp_path / "models" / "GFPGAN"
    elsewhere.mkdir(parents=True)
    folder = gfpgan_file.parent
    assert find_restore_model("GFPGANv1.4.pth", [elsewhere, folder]) == folder / "GFPGANv1.4.pth"
    assert find_restore_model("gfpganv1.4", [folder]) == folder / "GFPGANv1.4.pth"  # any case, no extension
    assert find_restore_model(str(gfpgan_file)) == gfpgan_file  # a path needs no folders
    again = load_restore_model(find_restore_model("GFPGANv1.4.pth", [folder]))
    assert again.purpose == "FaceSR" and again.scale == 1


def test_missing_model_lists_folders_and_expected_files(tmp_path):
    comfy = tmp_path / "ComfyUI" / "models" / "facerestore_models"
    comfy.mkdir(parents=True)
    (comfy / "4x-UltraSharp.pth").write_bytes(b"x")
    a1111 = tmp_path / "webui" / "models" / "Codeformer"  # does not exist
    with pytest.raises(HeadshotError) as err:
        find_restore_model("GFPGANv1.4.pth", [comfy, a1111])
    msg = str(err.value)
    assert err.value.code == "restore_model_missing"
    assert str(comfy) in msg and str(a1111) in msg and "does not exist" in msg
    for expected in ("GFPGANv1.4.pth", "codeformer-v0.1.0.pth", "RestoreFormer.pth", "facerestore_models"):
        assert expected in msg
    assert "4x-UltraSharp.pth" in msg  # what is there instead


def test_esrgan_upscaler_is_not_a_restore_model(tmp_path):
    ESRGAN = _arch_class("spandrel.architectures.ESRGAN", "ESRGAN", "RRDBNet")
    torch.manual_seed(0)
    path = _save_random(ESRGAN(num_filters=8, num_blocks=1, scale=4), tmp_path / "RealESRGAN_x4plus.pth", wrap=False)
    with pytest.raises(HeadshotError) as err:
        load_restore_model(path)
    msg = str(err.value)
    assert err.value.code == "not_a_restore_model"
    assert "RealESRGAN_x4plus.pth" in msg and "ESRGAN 4x upscaler" in msg
    assert "not a face-restoration model" in msg


def test_text_file_renamed_pth_gives_a_clear_error(tmp_path):
    path = tmp_path / "GFPGANv1.4.pth"
    path.write_text("<html><body>404: rate limit exceeded</body></html>\n")
    with pytest.raises(HeadshotError) as err:
        load_restore_model(path)
    assert err.value.code == "not_a_restore_model"
    assert "GFPGANv1.4.pth cannot be read as model weights" in str(err.value)
    assert "unfinished download" in str(err.value)


def test_without_spandrel_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "spandrel", None)  # import fails as if not installed
    with pytest.raises(BackendUnavailable, match="pip install spandrel spandrel_extra_arches"):
        load_restore_model(tmp_path / "GFPGANv1.4.pth")


# ---------------------------------------------------------------------------------------------
# alignment and pasting


def test_restore_on_astronaut_changes_faces_only(astronaut_img, dlib_analyzer, gfpgan):
    """Random GFPGAN weights: the faces change, every pixel away from them stays bit-identical.
    dlib also sees a faint 'face' on the spacesuit; it must be left alone, not painted over."""
    from headshot.faces.subject import confident_faces

    detected = dlib_analyzer.detect(np.asarray(astronaut_img))
    faces = confident_faces(detected)
    assert len(detected) == 2 and len(faces) == 1
    out, info = restore_faces(astronaut_img, gfpgan, dlib_analyzer)
    assert out.size == astronaut_img.size and out.mode == "RGB"
    assert len(info) == len(faces) and all(f["restored"] for f in info)
    before, after = np.asarray(astronaut_img), np.asarray(out)
    allowed = _face_disks(faces, before.shape)
    assert np.array_equal(before[~allowed], after[~allowed])
    changed = np.any(before != after, axis=-1)
    assert not changed[~allowed].any()
    x0, y0, x1, y1 = (int(v) for v in info[0]["box"])  # the largest face: Eileen Collins
    diff = np.abs(before[y0:y1, x0:x1].astype(int) - after[y0:y1, x0:x1].astype(int))
    assert diff.mean() > 10
    rx0, ry0, rx1, ry1 = info[0]["region"]
    assert rx0 <= x0 and ry0 <= y0 and rx1 >= x1 and ry1 >= y1  # the whole face box was pasted over


def test_aligned_face_has_eyes_on_the_ffhq_template_and_round_trips(astronaut_img, dlib_analyzer):
    """An identity 'model': the crop it receives has the eyes where the template puts them, and
    pasting it back reproduces the photo up to resampling."""
    model = IdentityFaceModel()
    out, info = restore_faces(astronaut_img, model, dlib_analyzer)
    crop = (model.inputs[0][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert crop.shape == (512, 512, 3)
    eyes = dlib_analyzer.detect(crop)[0].eyes
    assert np.abs(eyes - FFHQ_EYES_512).max() < 3
    x0, y0, x1, y1 = (int(v) for v in info[0]["box"])
    diff = np.abs(np.asarray(out, int) - np.asarray(astronaut_img, int))[y0:y1, x0:x1]
    assert diff.mean() < 4  # bicubic there and back, no shift


def test_upscale_and_strength(astronaut_img, dlib_analyzer):
    model = IdentityFaceModel()
    big, info = restore_faces(astronaut_img, model, dlib_analyzer, upscale=2)
    assert big.size == (1024, 1024)
    assert info[0]["box"][2] > 400  # boxes are in the enlarged image
    lanczos = np.asarray(astronaut_img.resize((1024, 1024), Image.LANCZOS))
    outside = np.ones(lanczos.shape[:2], bool)
    for face in info:
        fx0, fy0, fx1, fy1 = face["region"]
        outside[fy0:fy1, fx0:fx1] = False
    assert np.array_equal(np.asarray(big)[outside], lanczos[outside])
    same, info0 = restore_faces(astronaut_img, model, dlib_analyzer, strength=0.0)
    assert np.array_equal(np.asarray(same), np.asarray(astronaut_img))
    assert info0 and not any(f["restored"] for f in info0)
    with pytest.raises(ValueError):
        restore_faces(astronaut_img, model, dlib_analyzer, fidelity=1.5)


def test_image_without_face_is_unchanged(dlib_analyzer, gfpgan):
    ramp = np.linspace(0, 255, 320, dtype=np.float32)
    rgb = np.stack([np.tile(ramp, (240, 1)), np.tile(ramp[:240, None], (1, 320)), np.full((240, 320), 90.0)], -1)
    img = Image.fromarray(rgb.astype(np.uint8))
    out, info = restore_faces(img, gfpgan, dlib_analyzer)
    assert info == []
    assert out.size == img.size and np.array_equal(np.asarray(out), np.asarray(img))


# ---------------------------------------------------------------------------------------------
# CodeFormer (spandrel_extra_arches)


@pytest.fixture(scope="session")
def codeformer_file(tmp_path_factory):
    pytest.importorskip(
        "spandrel_extra_arches", reason="CodeFormer needs spandrel_extra_arches (pip install spandrel_extra_arches)"
    )
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(0)
    return _save_random(CodeFormer(), tmp_path_factory.mktemp("Codeformer") / "codeformer-v0.1.0.pth")


def test_codeformer_loads_and_receives_the_fidelity_weight(codeformer_file, monkeypatch):
    model = load_restore_model(codeformer_file)
    assert model.architecture.id == "CodeFormer" and model.purpose == "FaceSR"
    net = model.model
    calls = []
    forward = net.forward

    @functools.wraps(forward)
    def spy(*args, **kwargs):
        calls.append((args[0].min().item(), kwargs))
        return forward(*args, **kwargs)

    monkeypatch.setattr(net, "forward", spy)
    face = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    out = restore_aligned(model, face, fidelity=0.7)
    assert out.shape == (512, 512, 3) and 0 <= out.min() and out.max() <= 255
    ((lowest, kwargs),) = calls
    assert kwargs.get("weight") == 0.7
    assert lowest < -0.9  # the module gets [-1, 1] input, as CodeFormer was trained


def test_codeformer_without_extra_arches_names_the_package(codeformer_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "spandrel_extra_arches", None)
    with pytest.raises(BackendUnavailable, match="pip install spandrel_extra_arches"):
        load_restore_model(codeformer_file)
