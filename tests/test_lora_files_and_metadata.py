"""kohya LoRA files and metadata: plain safetensors with string metadata and the
sd-webui-additional-networks hash, kohya's ss_* and modelspec.* fields for SD1/SD2/SDXL, the A1111
sidecar, and load_lora's errors for files that are not kohya LoRAs.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from lora_format_helpers import _metadata, sd1_lora  # noqa: F401  (sd1_lora: a fixture)

from headshot.errors import HeadshotError
from headshot.train.lora_files import load_lora, write_a1111_sidecar

# --------------------------------------------------------------------------------------------
# files and metadata


def test_saved_file_is_plain_safetensors_with_string_metadata(sd1_lora):
    from safetensors import safe_open

    with safe_open(str(sd1_lora["path"]), framework="pt") as f:
        meta = f.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    # sd-webui-additional-networks' hash: SHA-256 of everything after the header
    raw = sd1_lora["path"].read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + header :]).hexdigest()
    assert len(meta["sshs_legacy_hash"]) == 8
    assert not list(sd1_lora["path"].parent.glob(".*.tmp"))


def test_kohya_metadata_sd1():
    meta = _metadata("sd1")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_output_name"] == "me_sd1"
    assert json.loads(meta["ss_tag_frequency"]) == {"10_ohwx woman": {"ohwx woman": 12, "smiling": 5, "outdoors": 2}}
    assert json.loads(meta["ss_dataset_dirs"]) == {"10_ohwx woman": {"n_repeats": 10, "img_count": 12}}
    assert meta["ss_resolution"] == "(512, 512)"
    assert meta["ss_steps"] == "1200" and meta["headshot.chosen_step"] == "1200"
    assert meta["ss_max_train_steps"] == "1500"
    assert meta["ss_learning_rate"] == "0.0001" and meta["ss_text_encoder_lr"] == "5e-05"
    assert meta["ss_optimizer"] == "AdamW8bit(weight_decay=0.01)"
    assert meta["ss_num_train_images"] == "120"  # images x repeats, as kohya counts
    assert meta["ss_seed"] == "42" and meta["ss_clip_skip"] == "None"
    assert meta["ss_training_started_at"] == "1700000000.0"
    assert meta["ss_noise_offset"] == "0.0357" and meta["headshot.preset"] == "balanced"
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.implementation"] == "diffusers"
    assert meta["modelspec.title"] == "me_sd1"
    assert meta["modelspec.resolution"] == "512x512"
    assert meta["modelspec.trigger_phrase"] == "ohwx woman"
    assert meta["modelspec.prediction_type"] == "epsilon"


def test_kohya_metadata_sdxl_and_sd2():
    meta = _metadata("sdxl", chosen_step=None)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["ss_resolution"] == "(1024, 1024)" and meta["modelspec.resolution"] == "1024x1024"
    assert "headshot.chosen_step" not in meta and meta["ss_steps"] == "1500"  # the final step
    sd2 = _metadata("sd2", training={"v_parameterization": True, "steps": 800}, resolution=(768, 768))
    assert sd2["ss_v2"] == "True" and sd2["ss_base_model_version"] == "sd_v2_v"
    assert sd2["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert sd2["modelspec.prediction_type"] == "v"
    assert all(isinstance(v, str) for v in sd2.values())


def test_a1111_sidecar(tmp_path, sd1_lora):
    lora = tmp_path / "me.v2.safetensors"
    lora.write_bytes(sd1_lora["path"].read_bytes())
    (tmp_path / "me.v2.json").write_text(json.dumps({"notes": "old", "preview": "keep me"}))
    sidecar = write_a1111_sidecar(lora, activation_text="ohwx woman", preferred_weight=0.8, sd_version="sd1")
    assert sidecar == tmp_path / "me.v2.json"
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    assert {"description", "sd version", "activation text", "preferred weight", "notes"} <= set(data)
    assert data["sd version"] == "SD1" and data["activation text"] == "ohwx woman"
    assert data["preferred weight"] == 0.8 and data["notes"] == "" and data["preview"] == "keep me"
    xl = write_a1111_sidecar(tmp_path / "x.safetensors", activation_text="a", preferred_weight=1, sd_version="SDXL")
    assert json.loads(xl.read_text())["sd version"] == "SDXL"
    with pytest.raises(HeadshotError, match="SD1, SD2 or SDXL"):
        write_a1111_sidecar(lora, activation_text="", preferred_weight=1, sd_version="flux")


def test_load_lora_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(HeadshotError) as err:
        load_lora(tmp_path / "nope.safetensors")
    assert err.value.code == "lora_not_found" and "does not exist" in str(err.value)

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all" * 10)
    with pytest.raises(HeadshotError) as err:
        load_lora(junk)
    assert err.value.code == "lora_not_safetensors" and ".safetensors" in str(err.value)

    pickled = tmp_path / "old.pt"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(1)}, pickled)
    with pytest.raises(HeadshotError, match="pickled"):
        load_lora(pickled)

    checkpoint = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(checkpoint))
    with pytest.raises(HeadshotError) as err:
        load_lora(checkpoint)
    assert err.value.code == "lora_no_keys" and "not a kohya LoRA" in str(err.value)

    diffusers_format = tmp_path / "pytorch_lora_weights.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 2)}, str(diffusers_format))
    with pytest.raises(HeadshotError, match="diffusers/peft-format"):
        load_lora(diffusers_format)
