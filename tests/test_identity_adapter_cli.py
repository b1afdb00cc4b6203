"""`headshot generate --reference PHOTO`: one-photo mode from the command line, and the photoshoot passing
the identity to every request (first pass and detailer).

Tiny SD1 model, a tiny FaceID adapter in the real layout and stand-in buffalo_l ONNX graphs (see
test_identity_adapter's docstring): wiring, not likeness.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")

import tiny_models  # noqa: E402
from faceid_fixtures import faceid_state, make_buffalo_pack, save_adapter  # noqa: E402

from headshot.cli import main  # noqa: E402
from headshot.samples import astronaut  # noqa: E402

FACE_AT = (281, 150, 140)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from diffusers import UNet2DConditionModel

    root = tmp_path_factory.mktemp("one_photo")
    base = tiny_models.make_tiny_sd1(root / "sd1")
    comfy = root / "ComfyUI"
    save_adapter(
        faceid_state(UNet2DConditionModel.from_pretrained(base / "unet")),
        comfy / "models" / "ipadapter" / "ip-adapter-faceid_sd15.safetensors",
    )
    make_buffalo_pack(root / "insightface" / "models" / "buffalo_l", [FACE_AT])
    astronaut().save(root / "me.png")
    return {"base": base, "comfy": comfy, "faces": root / "insightface", "photo": root / "me.png"}


def _args(kit, out, *extra):
    return [
        "generate", "--reference", str(kit["photo"]), "--base-model", str(kit["base"]), "--out", str(out),
        "--style", "linkedin_corporate", "--count", "1", "--size", "64x64", "--steps", "2",
        "--face-backend", "insightface", "--face-models", str(kit["faces"]), "--device", "cpu", *extra,
    ]  # fmt: skip


def test_one_photo_generate_finds_the_adapter_in_comfyui(kit, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COMFYUI_PATH", str(kit["comfy"]))
    assert main(_args(kit, tmp_path / "out")) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    entry = results[0] if isinstance(results, list) else results["pictures"][0]
    assert entry["identity_adapter"].endswith("models/ipadapter/ip-adapter-faceid_sd15.safetensors")
    assert entry["adapter_weight"] == 0.8 and entry["loras"] == []


def test_a_missing_adapter_fails_before_any_model_loads_naming_the_file(kit, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.delenv("A1111_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(_args(kit, tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert "adapter_missing" in err and "ip-adapter-faceid-plusv2_sd15.bin" in err and "models/ipadapter" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_adapter_without_a_reference_photo_is_refused(kit, tmp_path, capsys):
    args = _args(kit, tmp_path / "out", "--adapter", "x.bin")
    args[args.index("--reference") + 1] = str(tmp_path)  # a folder: ranking only
    assert main(args) == 1 and "--reference PHOTO" in capsys.readouterr().err


class _HostSampler:
    """Stands in for a host's sampler (ComfyUI, A1111): records each request, returns the astronaut."""

    family = "sd1"

    def __init__(self):
        self.requests = []

    def text_to_image(self, request, progress=None):
        self.requests.append(request)
        return astronaut().resize((request.width, request.height))

    def masked_image_to_image(self, request, progress=None):
        self.requests.append(request)
        return request.image


def test_the_photoshoot_gives_the_identity_to_first_pass_and_detailer(dlib_analyzer, tmp_path):
    from headshot.finish.detail_and_restore import Finishing
    from headshot.photoshoot import GenerateSettings, generate
    from headshot.sampling.protocol import IdentityAdapter

    identity = IdentityAdapter("ip-adapter-faceid_sd15.bin", np.ones(512, np.float32), Image.new("RGB", (224, 224)))
    host = _HostSampler()
    settings = GenerateSettings(
        style="linkedin_corporate",
        count=1,
        out_dir=tmp_path,
        size=(512, 512),
        steps=2,
        detailer=True,
        identity=identity,
    )
    generate(settings, host, Finishing(analyzer=dlib_analyzer))
    kinds = [type(r).__name__ for r in host.requests]
    assert kinds[0] == "TextToImage" and "MaskedImageToImage" in kinds
    assert all(r.identity is identity for r in host.requests)
