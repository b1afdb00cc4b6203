"""The families registry: one detection rule each for single files, diffusers folders and LoRA files,
and a family added to the registry is seen by every list and every rule.

The models are the tiny random SD1/SD2/SDXL of tests/tiny_models.py (wiring and formats only).
The fake family below is a stand-in for a future one (an SD3-like key layout); it is registered for
one test and removed afterwards.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import make_tiny_sd1, make_tiny_sd2, make_tiny_sdxl, save_single_file

from headshot.errors import HeadshotError
from headshot.families import (
    base_model_family,
    detect_checkpoint,
    diffusers_folder_family,
    family_for_comfyui_config,
    family_names,
    get_family,
    lora_families,
    register_family,
    unregister_family,
)
from headshot.train.lora_files import save_lora
from headshot.train.lora_metadata import kohya_metadata
from headshot.train.lora_names import kohya_module_name

UNET_MODULES = {  # a few kohya-target modules of each tiny UNet, by diffusers path
    "sd1": ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", "up_blocks.1.attentions.0.proj_in"],
    "sdxl": ["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", "up_blocks.0.attentions.1.proj_out"],
}
TINY_SDXL = {
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{family: (diffusers folder, single file)} of the tiny models."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for family, build in (("sd1", make_tiny_sd1), ("sd2", make_tiny_sd2), ("sdxl", make_tiny_sdxl)):
        folder = build(root / family)
        out[family] = (folder, save_single_file(folder, root / f"{family}.safetensors", family))
    return out


def _lora(path, family: str, unet_family: str, te_width: int = 32, metadata: bool = False):
    """A kohya LoRA file with one text-encoder module per component and two UNet modules (zero weights)."""
    fam = get_family(family)
    names = [
        kohya_module_name(family, "unet", m, unet_config=TINY_SDXL if family == "sdxl" else None)
        for m in UNET_MODULES[unet_family]
    ]
    names += [kohya_module_name(family, c, "encoder.layers.0.self_attn.k_proj") for c in fam.text_components]
    tensors = {}
    for name in names:
        width = te_width if "_te" in name else 32
        tensors[f"{name}.lora_down.weight"] = torch.zeros(4, width)
        tensors[f"{name}.lora_up.weight"] = torch.zeros(width, 4)
        tensors[f"{name}.alpha"] = torch.tensor(4.0)
    meta = (
        kohya_metadata(
            family=family,
            rank=4,
            alpha=4.0,
            output_name=path.stem,
            trigger="ohwx",
            class_word="man",
            tag_frequency={},
            dataset_dirs={},
            training={},
            chosen_step=None,
            resolution=fam.default_resolution,
        )
        if metadata
        else {}
    )
    save_lora(path, tensors, meta)
    return path


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_single_files_and_folders_are_detected_by_one_rule(models, family):
    folder, single = models[family]
    found, prediction = detect_checkpoint(load_file(str(single)))
    assert found.name == family
    assert prediction == (None if family == "sd2" else "epsilon")  # SD2 came in both kinds: the probe decides
    assert diffusers_folder_family(folder).name == family
    assert base_model_family(folder).name == base_model_family(single).name == family


def test_lora_files_are_detected_from_names_widths_and_metadata(tmp_path):
    assert lora_families(_lora(tmp_path / "xl.safetensors", "sdxl", "sdxl")) == {"sdxl"}  # te1/te2, SGM names
    assert lora_families(_lora(tmp_path / "bare.safetensors", "sd1", "sd1")) == {"sd1", "sd2"}  # names alone
    assert lora_families(_lora(tmp_path / "v1.safetensors", "sd1", "sd1", metadata=True)) == {"sd1"}
    assert lora_families(_lora(tmp_path / "v2.safetensors", "sd2", "sd1", metadata=True)) == {"sd2"}
    assert lora_families(_lora(tmp_path / "h.safetensors", "sd1", "sd1", te_width=1024)) == {"sd2"}  # OpenCLIP-H
    assert lora_families(_lora(tmp_path / "l.safetensors", "sd1", "sd1", te_width=768)) == {"sd1"}  # CLIP-L


def test_names_and_aliases_resolve_and_unknown_ones_are_refused():
    assert family_names() == ("sd1", "sd2", "sdxl")
    assert get_family("SD1.5").name == "sd1" and get_family("sd-xl").name == "sdxl"
    assert [get_family(n).title for n in family_names()] == ["SD 1.x", "SD 2.x", "SDXL"]
    with pytest.raises(HeadshotError) as caught:
        get_family("flux")
    assert caught.value.code == "unknown_family" and "sd1, sd2, sdxl" in caught.value.message


def test_hosts_names_map_to_families():
    """ComfyUI's model config classes (comfy.supported_models) and A1111's sidecar versions."""
    names = {
        c: family_for_comfyui_config(c).name
        for c in ("SD15", "SD20", "SD21UnclipH", "SDXL", "SDXLRefiner", "SSD1B", "KOALA_700M", "SomethingNew")
    }
    assert names == {
        "SD15": "sd1",
        "SD20": "sd2",
        "SD21UnclipH": "sd2",
        "SDXL": "sdxl",
        "SDXLRefiner": "sdxl",
        "SSD1B": "sdxl",
        "KOALA_700M": "sdxl",
        "SomethingNew": "sd1",
    }
    assert [get_family(n).a1111_sd_version for n in ("sd1", "sd2", "sdxl")] == ["SD1", "SD2", "SDXL"]


@pytest.fixture
def fake_family():
    """An SD1-like family whose text encoder sits elsewhere in single files and in a third diffusers folder,
    with a LoRA component of its own: a registered family that no table in the code names."""
    sd1 = get_family("sd1")
    encoder = dataclasses.replace(
        sd1.text_encoders[0],
        component="te3",
        checkpoint_prefix="text_encoders.clip_l.",
        subfolder="text_encoder_3",
        tokenizer_subfolder="tokenizer_3",
    )
    fake = dataclasses.replace(
        sd1,
        name="fake3",
        title="Fake 3",
        aliases=("fake-three",),
        text_encoders=(encoder,),
        metadata_markers=("fake_v3",),
        ss_base_model_version="fake_v3",
        a1111_sd_version="FAKE3",
    )
    register_family(fake)
    yield fake
    unregister_family("fake3")


def _as_fake(state: dict) -> dict:
    old = "cond_stage_model.transformer."
    return {("text_encoders.clip_l." + k[len(old) :]) if k.startswith(old) else k: v for k, v in state.items()}


def test_a_registered_family_is_listed_and_detected_everywhere(models, tmp_path, fake_family):
    assert "fake3" in family_names() and get_family("Fake-Three") is fake_family
    state = _as_fake(load_file(str(models["sd1"][1])))
    assert detect_checkpoint(state)[0] is fake_family

    folder = tmp_path / "fake_folder"
    index = json.loads((models["sd1"][0] / "model_index.json").read_text())
    index["text_encoder_3"] = index.pop("text_encoder")
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    assert diffusers_folder_family(folder) is fake_family

    lora = _lora(tmp_path / "fake.safetensors", "fake3", "sd1", metadata=True)
    assert lora_families(lora) == {"fake3"}


def test_an_unregistered_family_is_no_longer_detected(models, fake_family):
    state = _as_fake(load_file(str(models["sd1"][1])))
    unregister_family("fake3")
    try:
        assert "fake3" not in family_names()
        with pytest.raises(HeadshotError) as caught:
            detect_checkpoint(state)
        assert caught.value.code == "not_a_base_model"
    finally:
        register_family(fake_family)  # the fixture removes it again


def test_a_new_family_uses_its_style_fallback_table(fake_family, tmp_path):
    """Styles name sd1/sd2/sdxl tables; a registered family borrows the one its record points to."""
    from headshot.generate.styles import load_styles

    unregister_family("fake3")
    register_family(dataclasses.replace(fake_family, style_fallback="sdxl"))  # the fixture removes it again
    (tmp_path / "fam.toml").write_text(
        'title = "Fam"\ncategory = "professional"\nprompt = "photo of {subject}"\nnegative = "blurry"\n'
        'width = 512\nheight = 640\nsampler = "dpmpp_2m_karras"\nsteps = 20\ncfg = 7.0\n\n[sdxl]\nsteps = 33\n'
    )
    style = load_styles([tmp_path])["fam"]
    assert style.for_family("fake3").steps == 33
    assert style.for_family("sd1").steps == 20
