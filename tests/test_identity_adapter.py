"""One-photo mode: IP-Adapter FaceID loaded through diffusers' `load_ip_adapter` into the standalone sampler.

Tiny randomly initialised adapters in the real key layout (tests/faceid_fixtures.py) on the tiny SD1 and
SDXL test models; the 512-d identity comes from our insightface backend run on stand-in ONNX graphs (the
buffalo_l files cannot be downloaded here) from two real photos: scikit-image's astronaut and a woman from
the insightface wheel's group photo. These tests prove wiring (every key loaded and used, the reference
face reaches the picture, the adapter works beside a LoRA and in the detailer), never likeness.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import tiny_models  # noqa: E402
from faceid_fixtures import faceid_state, make_buffalo_pack, make_tiny_image_encoder, save_adapter  # noqa: E402

from headshot.errors import HeadshotError  # noqa: E402
from headshot.faces.insightface_onnx import InsightFaceAnalyzer  # noqa: E402
from headshot.samples import GROUP_MEMBERS, astronaut, insightface_image  # noqa: E402
from headshot.sampling.identity_adapter import read_adapter_file  # noqa: E402
from headshot.sampling.identity_reference import identity_from_photo  # noqa: E402
from headshot.sampling.protocol import LoraWeight, MaskedImageToImage, TextToImage  # noqa: E402

FACE_AT = (281, 150, 140)  # where the stand-in detector reports the face, in its 640 px canvas


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Two real people, each with the face where the stand-in detector reports one (512 px photos)."""
    folder = tmp_path_factory.mktemp("reference")
    astronaut().save(folder / "astronaut.png")
    x0, y0, x1, y1 = GROUP_MEMBERS["stranger_left.jpg"]
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    insightface_image("t1.jpg").crop((cx - 225, cy - 120, cx + 287, cy + 392)).save(folder / "woman.png")
    return {"astronaut": folder / "astronaut.png", "woman": folder / "woman.png"}


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory) -> InsightFaceAnalyzer:
    return InsightFaceAnalyzer(make_buffalo_pack(tmp_path_factory.mktemp("buffalo_l"), [FACE_AT]))


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    from headshot.sampling.diffusers_sampler import DiffusersSampler

    folder = tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("sd1"))
    sampler = DiffusersSampler(str(folder), device="cpu")
    state = faceid_state(sampler.base.unet)
    adapter = save_adapter(state, tmp_path_factory.mktemp("ipadapter") / "ip-adapter-faceid_sd15.safetensors")
    return {"sampler": sampler, "state": state, "adapter": adapter, "folder": folder}


def _draw(sampler, identity=None, loras=(), seed=1) -> np.ndarray:
    request = TextToImage("ohwx woman", "", 64, 64, 2, 5.0, seed, loras=list(loras), identity=identity)
    return np.asarray(sampler.text_to_image(request), np.int16)


def test_faceid_sd15_loads_every_key_and_the_reference_face_reaches_the_picture(sd1, analyzer, photos):
    sampler = sd1["sampler"]
    plain = _draw(sampler)
    jane = identity_from_photo(photos["astronaut"], analyzer, sd1["adapter"])
    other = identity_from_photo(photos["woman"], analyzer, sd1["adapter"])
    assert jane.embedding.shape == (512,) and abs(float(np.linalg.norm(jane.embedding)) - 1) < 1e-4
    with_jane = _draw(sampler, jane)

    loaded = sampler._identity.loaded
    assert loaded.kind == "faceid" and loaded.keys == len(sd1["state"])  # every key of the file ...
    unet = sampler.base.unet
    crosses = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    ip_procs = [p for p in unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    assert len(ip_procs) == len(crosses) and len(unet.encoder_hid_proj.image_projection_layers) == 1
    assert sampler._patches.weights[loaded.lora_name] == pytest.approx(0.8)  # ... its LoRA hooked in and on
    lora_keys = [k for k in sd1["state"] if "_lora." in k]
    hooked = sum(1 for deltas in sampler._patches._deltas.values() for d in deltas if d.lora == loaded.lora_name)
    assert hooked * 2 == len(lora_keys)

    with_other = _draw(sampler, other)
    print(
        "mean change of 255: adapter", np.abs(with_jane - plain).mean(), "face", np.abs(with_jane - with_other).mean()
    )
    assert np.abs(with_jane - plain).mean() > 1.0  # the adapter reaches the picture
    assert np.abs(with_jane - with_other).mean() > 1.0  # and so does the reference face
    assert np.array_equal(with_jane, _draw(sampler, jane))  # the same face, the same picture
    assert np.array_equal(plain, _draw(sampler))  # a request without identity: adapter and its LoRA off


def test_the_detailer_request_carries_the_adapter_into_inpainting(sd1, analyzer, photos):
    sampler = sd1["sampler"]
    jane = identity_from_photo(photos["astronaut"], analyzer, sd1["adapter"])
    image = astronaut().resize((64, 64))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))

    def repaint(identity):
        request = MaskedImageToImage(image, mask, "ohwx woman", "", 4, 5.0, 3, denoise=0.9, identity=identity)
        return np.asarray(sampler.masked_image_to_image(request), np.int16)

    assert np.abs(repaint(jane) - repaint(None)).mean() > 0.5


def test_adapter_and_identity_lora_load_and_work_together(sd1, analyzer, photos, tmp_path):
    """Both hook into the same UNet layers (the FaceID LoRA and the person's LoRA); both stay on."""
    from headshot.train.lora_files import load_lora

    sampler = sd1["sampler"]
    lora = _random_kohya_lora(sampler, tmp_path / "jane.safetensors")
    jane = identity_from_photo(photos["astronaut"], analyzer, sd1["adapter"])
    adapter_only = _draw(sampler, jane)
    both = _draw(sampler, jane, [LoraWeight(str(lora), 1.0)])
    assert load_lora(str(lora))[0]  # a real kohya file
    weights = sampler._patches.weights
    assert weights[str(lora)] == 1.0 and weights[sampler._identity.loaded.lora_name] == pytest.approx(0.8)
    assert np.abs(both - adapter_only).mean() > 0.5


def _random_kohya_lora(sampler, path: Path) -> Path:
    """A kohya LoRA on the tiny UNet's attention layers, non-zero (a trained one starts from zero)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    tensors = {}
    for name, module in sampler.base.unet.named_modules():
        if name.endswith(("attn2.to_k", "attn2.to_v", "attn1.to_q")):
            key = "lora_unet_" + name.replace(".", "_")
            tensors[f"{key}.lora_down.weight"] = torch.randn(4, module.in_features, generator=g) * 0.3
            tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, 4, generator=g) * 0.3
            tensors[f"{key}.alpha"] = torch.tensor(4.0)
    save_file(
        tensors, str(path), metadata={"ss_network_dim": "4", "ss_network_alpha": "4", "ss_base_model_version": "sd_v1"}
    )
    return path


def test_sdxl_faceid_plus_v2_reads_the_face_with_clip(tmp_path_factory, analyzer, photos):
    from headshot.sampling.diffusers_sampler import DiffusersSampler

    folder = tiny_models.make_tiny_sdxl(tmp_path_factory.mktemp("sdxl"))
    sampler = DiffusersSampler(str(folder), device="cpu")
    state = faceid_state(sampler.base.unet, plus=True, clip_width=32)
    adapter = save_adapter(state, tmp_path_factory.mktemp("ipa") / "ip-adapter-faceid-plusv2_sdxl.bin")
    encoder = make_tiny_image_encoder(tmp_path_factory.mktemp("image_encoder"))
    jane = identity_from_photo(photos["astronaut"], analyzer, adapter, image_encoder=encoder)
    other = identity_from_photo(photos["woman"], analyzer, adapter, image_encoder=encoder)
    assert jane.face is not None and jane.face.size == (224, 224)

    def draw(identity):
        request = TextToImage("ohwx woman", "", 64, 64, 2, 5.0, 1, sampler="euler", identity=identity)
        return np.asarray(sampler.text_to_image(request), np.int16)

    plain, a, b = draw(None), draw(jane), draw(other)
    loaded = sampler._identity.loaded
    assert (loaded.kind, loaded.shortcut, loaded.keys) == ("faceid_plus", True, len(state))
    assert np.abs(a - plain).mean() > 1.0 and np.abs(a - b).mean() > 1.0

    # the same identity without its face crop: the CLIP half of Plus then has nothing to read
    layer = sampler.base.unet.encoder_hid_proj.image_projection_layers[0]
    assert layer.clip_embeds.shape[:2] == (2, 1) and layer.clip_embeds.shape[-1] == 32


def test_official_bin_layout_is_read_as_tensors_only(sd1, tmp_path):
    nested = save_adapter(sd1["state"], tmp_path / "ip-adapter-faceid_sd15.bin")
    state = read_adapter_file(nested)
    assert sum(len(part) for part in state.values()) == len(sd1["state"])


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_adapter",))


def test_a_bin_holding_code_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ip-adapter-faceid_sd15.bin"
    with open(path, "wb") as f:
        pickle.dump({"image_proj": {"x": _Payload()}, "ip_adapter": {}}, f)
    torch.save({"image_proj": {"x": _Payload()}, "ip_adapter": {}}, str(tmp_path / "zip.bin"))
    for candidate in (path, tmp_path / "zip.bin"):
        with pytest.raises(HeadshotError) as caught:
            read_adapter_file(candidate)
        assert caught.value.code == "adapter_unreadable" and "unpickled" in str(caught.value)
    assert not (tmp_path / "pwned_by_adapter").exists()


def test_an_adapter_for_another_family_is_refused_before_anything_loads(sd1, tmp_path, analyzer, photos):
    from headshot.sampling.identity_adapter import check_fits

    unet = sd1["sampler"].base.unet
    wide = faceid_state(unet)
    wide["image_proj.norm.weight"] = torch.ones(2048)  # SDXL's text width
    with pytest.raises(HeadshotError) as caught:
        check_fits(
            {"image_proj": {k[11:]: v for k, v in wide.items() if k.startswith("image_proj.")}, "ip_adapter": {}},
            unet,
            "x.bin",
        )
    assert caught.value.code == "adapter_mismatch" and "SDXL" in str(caught.value)
    extra = dict(sd1["state"], **{"ip_adapter.999.to_k_ip.weight": torch.zeros(1)})
    split = {
        p: {k.partition(".")[2]: v for k, v in extra.items() if k.startswith(p + ".")}
        for p in ("image_proj", "ip_adapter")
    }
    with pytest.raises(HeadshotError, match="1 of its keys have no place"):
        check_fits(split, unet, "x.bin")


def test_a_plain_ip_adapter_is_not_taken_for_faceid(tmp_path):
    from safetensors.torch import save_file

    from headshot.sampling.identity_adapter import adapter_kind

    path = tmp_path / "ip-adapter_sd15.safetensors"
    save_file(
        {"image_proj.proj.weight": torch.zeros(3072, 1024), "ip_adapter.1.to_k_ip.weight": torch.zeros(2, 2)}, str(path)
    )
    with pytest.raises(HeadshotError, match="not a FaceID one"):
        adapter_kind(read_adapter_file(path), path.name)


@pytest.mark.parametrize(
    "faces, code", [([], "no_face"), ([FACE_AT, (520, 160, 130)], "multiple_faces")], ids=["no-face", "two-faces"]
)
def test_a_reference_photo_prepare_would_reject_is_refused_with_its_reason(tmp_path, photos, faces, code):
    analyzer = InsightFaceAnalyzer(make_buffalo_pack(tmp_path / "pack", faces))
    with pytest.raises(HeadshotError) as caught:
        identity_from_photo(photos["astronaut"], analyzer, "ip-adapter-faceid_sd15.bin")
    assert caught.value.code == code and str(caught.value).startswith("reference photo refused: astronaut.png")


def test_the_dlib_backend_is_refused_for_one_photo_mode(dlib_analyzer, photos):
    with pytest.raises(HeadshotError, match="insightface"):
        identity_from_photo(photos["astronaut"], dlib_analyzer, "ip-adapter-faceid_sd15.bin")


def test_a_missing_adapter_names_the_file_and_where_it_goes(tmp_path):
    from headshot.generate.adapter_files import adapter_dirs, find_adapter

    comfy = tmp_path / "ComfyUI"
    dirs = adapter_dirs([], environ={"COMFYUI_PATH": str(comfy)}, cwd=tmp_path)
    with pytest.raises(HeadshotError) as caught:
        find_adapter(None, dirs, "sd1")
    message = str(caught.value)
    assert caught.value.code == "adapter_missing"
    assert "ip-adapter-faceid-plusv2_sd15.bin" in message and str(comfy / "models/ipadapter") in message
    assert "models/ControlNet" in message
    (comfy / "models/ipadapter").mkdir(parents=True)
    found = comfy / "models/ipadapter/ip-adapter-faceid_sd15.safetensors"
    found.write_bytes(b"")
    assert find_adapter(None, dirs, "sd1") == found
    assert find_adapter("ip-adapter-faceid_sd15", dirs, "sd1") == found
