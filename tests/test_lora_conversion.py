"""kohya LoRA state dicts: peft -> kohya layout and names, exact round trips back to peft for SD1 and
SDXL, and the refusals of keys that match no module and of states kohya cannot describe.

Tiny randomly initialised SD1/SDXL UNets and CLIP text encoders, LoRAs trained "like the engine"
(lora_format_helpers).
"""

from __future__ import annotations

import pytest
import torch
from lora_format_helpers import (  # noqa: F401  (sd1_lora, sdxl_lora: fixtures)
    ALPHA,
    RANK,
    _tiny_sd1,
    _tiny_sdxl,
    _train_like_engine,
    sd1_lora,
    sdxl_lora,
)

from headshot.errors import HeadshotError
from headshot.train.lora_conversion import kohya_to_peft, peft_to_kohya
from headshot.train.lora_files import load_lora
from headshot.train.lora_targets import kohya_unet_targets

# --------------------------------------------------------------------------------------------
# state dicts


def test_peft_to_kohya_layout(sd1_lora):
    tensors, _ = load_lora(sd1_lora["path"])
    n_unet, n_te = len(sd1_lora["unet_targets"]), len(sd1_lora["te_targets"])
    assert len(tensors) == 3 * (n_unet + n_te)
    base = "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert tensors[f"{base}.lora_down.weight"].shape == (RANK, 8, 1, 1)  # 1x1 conv stays 4-D
    assert tensors[f"{base}.lora_up.weight"].shape == (8, RANK, 1, 1)
    alpha = tensors[f"{base}.alpha"]
    assert alpha.ndim == 0 and alpha.dtype == torch.float32 and alpha.item() == ALPHA
    q = "lora_te_text_model_encoder_layers_1_self_attn_q_proj"
    assert tensors[f"{q}.lora_down.weight"].shape == (RANK, 16)
    assert all(k.split(".")[0].startswith(("lora_unet_", "lora_te_")) for k in tensors)


def test_peft_prefixes_and_adapter_names_are_accepted():
    unet, _ = _tiny_sd1()
    targets = kohya_unet_targets(unet)
    state = _train_like_engine(unet, targets, seed=5)
    plain = peft_to_kohya("sd1", "unet", state, RANK, ALPHA)
    decorated = {"base_model.model." + k.replace(".weight", ".default.weight"): v for k, v in state.items()}
    assert peft_to_kohya("sd1", "unet", decorated, RANK, ALPHA).keys() == plain.keys()


def test_sd1_round_trip_is_exact(sd1_lora):
    unet, te = _tiny_sd1()
    tensors, _ = load_lora(sd1_lora["path"])
    states, alphas = kohya_to_peft("sd1", tensors, unet, te)
    assert set(states) == {"unet", "te"}
    for comp, original in (("unet", sd1_lora["unet_state"]), ("te", sd1_lora["te_state"])):
        assert states[comp].keys() == original.keys()
        for key, value in original.items():
            assert states[comp][key].dtype == value.dtype
            assert torch.equal(states[comp][key], value), key
    assert len(alphas) == len(sd1_lora["unet_targets"]) + len(sd1_lora["te_targets"])
    assert set(alphas.values()) == {ALPHA}
    assert "unet.down_blocks.0.attentions.0.proj_in" in alphas


def test_sdxl_round_trip_is_exact(sdxl_lora):
    unet, te1, te2 = _tiny_sdxl()
    tensors, _ = load_lora(sdxl_lora["path"])
    assert any(k.startswith("lora_unet_input_blocks_3_1_") for k in tensors)
    assert any(k.startswith("lora_unet_middle_block_1_") for k in tensors)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_1_") for k in tensors)
    states, alphas = kohya_to_peft("sdxl", tensors, unet, [te1, te2])
    assert set(states) == {"unet", "te1", "te2"}
    for comp, original in sdxl_lora["states"].items():
        assert states[comp].keys() == original.keys()
        for key, value in original.items():
            assert torch.equal(states[comp][key], value), key
    assert set(alphas.values()) == {ALPHA}


def test_kohya_to_peft_lists_keys_that_match_no_module(sd1_lora):
    unet, te = _tiny_sd1()
    tensors, _ = load_lora(sd1_lora["path"])
    tensors["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = torch.zeros(RANK, 8)
    tensors["lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight"] = torch.zeros(8, RANK)
    with pytest.raises(HeadshotError) as err:
        kohya_to_peft("sd1", tensors, unet, te)
    assert err.value.code == "lora_unknown_modules"
    assert "lora_unet_down_blocks_9_attentions_0_proj_in" in str(err.value)
    # an SD1 LoRA on an SDXL UNet: nothing matches
    sdxl_unet, te1, te2 = _tiny_sdxl()
    with pytest.raises(HeadshotError, match="another model family"):
        kohya_to_peft("sdxl", load_lora(sd1_lora["path"])[0], sdxl_unet, [te1, te2])


def test_peft_to_kohya_refuses_states_it_cannot_describe():
    unet, _ = _tiny_sd1()
    targets = kohya_unet_targets(unet)
    state = _train_like_engine(unet, targets, seed=6)
    with pytest.raises(HeadshotError, match="not rank 8"):
        peft_to_kohya("sd1", "unet", state, 8, ALPHA)
    with pytest.raises(HeadshotError, match="have no weights"):
        peft_to_kohya("sd1", "unet", state, RANK, ALPHA, targets + ["down_blocks.0.resnets.0.conv1"])
    with pytest.raises(HeadshotError, match="not plain LoRA"):
        peft_to_kohya("sd1", "unet", {**state, "x.lora_magnitude_vector.weight": torch.ones(3)}, RANK, ALPHA)
