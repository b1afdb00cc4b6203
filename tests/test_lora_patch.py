"""The standalone sampler's LoRA hooks: kohya's update rule on live modules, with no adapter-API version gate.

Tiny randomly initialised SD1/SDXL UNets and CLIP text encoders (from test_lora_format) and LoRA files
written by our own writer. The reference is computed independently: each adapted module's weight merged as
W + alpha/rank * up @ down, the definition kohya, ComfyUI and A1111 apply. Wiring and maths, not likeness.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from test_lora_format import ALPHA, RANK, _tiny_sd1, _tiny_sdxl, sd1_lora, sdxl_lora  # noqa: E402,F401

from headshot.errors import HeadshotError  # noqa: E402
from headshot.sampling.lora_patch import LoraPatches  # noqa: E402


def _merged(model, peft_state, weight=1.0):
    """A copy of `model` with each LoRA merged into its weights (the reference)."""
    merged = copy.deepcopy(model)
    for key, down in peft_state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")]
        up = peft_state[f"{name}.lora_B.weight"]
        module = merged.get_submodule(name)
        update = (up.flatten(1) @ down.flatten(1)) * (ALPHA / RANK) * weight
        with torch.no_grad():
            module.weight += update.reshape(module.weight.shape)
    return merged


def _unet_out(unet, cross_dim=16):
    torch.manual_seed(5)
    sample = torch.randn(1, 4, 16, 16)
    context = torch.randn(1, 7, cross_dim)
    with torch.no_grad():
        return unet(sample, 500, encoder_hidden_states=context).sample


def _te_out(te):
    ids = torch.tensor([[0, 320, 125, 539, 2]])
    with torch.no_grad():
        return te(ids).last_hidden_state


def test_hooks_equal_merged_weights_on_unet_and_text_encoder(sd1_lora):
    unet, te = _tiny_sd1()
    ref_unet, ref_te = _merged(unet, sd1_lora["unet_state"]), _merged(te, sd1_lora["te_state"])
    patches = LoraPatches("sd1", unet, [te])
    modules = patches.load(sd1_lora["path"])
    patches.set_weights({str(sd1_lora["path"]): 1.0})
    assert modules == len(sd1_lora["unet_targets"]) + len(sd1_lora["te_targets"])
    torch.testing.assert_close(_te_out(te), _te_out(ref_te), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_unet_out(unet), _unet_out(ref_unet), rtol=1e-4, atol=1e-5)


def test_weight_scales_the_update_and_zero_restores_the_base(sd1_lora):
    unet, te = _tiny_sd1()
    base = _te_out(te)
    half = _te_out(_merged(te, sd1_lora["te_state"], weight=0.5))
    patches = LoraPatches("sd1", unet, [te])
    patches.load(sd1_lora["path"])
    patches.set_weights({str(sd1_lora["path"]): 0.5})
    torch.testing.assert_close(_te_out(te), half, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(_te_out(te), base)
    patches.set_weights({})
    assert torch.equal(_te_out(te), base)
    patches.remove()
    assert torch.equal(_te_out(te), base)


def test_sdxl_file_applies_to_both_text_encoders(sdxl_lora):
    unet, te1, te2 = _tiny_sdxl()
    ref2 = _merged(te2, sdxl_lora["states"]["te2"])
    patches = LoraPatches("sdxl", unet, [te1, te2])
    patches.load(sdxl_lora["path"])
    patches.set_weights({str(sdxl_lora["path"]): 1.0})
    with torch.no_grad():
        ids = torch.tensor([[0, 320, 125, 2]])
        torch.testing.assert_close(te2(ids).text_embeds, ref2(ids).text_embeds, rtol=1e-4, atol=1e-5)


def test_sdxl_lora_on_sd1_model_is_refused_naming_the_family(sdxl_lora):
    unet, te = _tiny_sd1()
    with pytest.raises(HeadshotError, match="sd1"):
        LoraPatches("sd1", unet, [te]).load(sdxl_lora["path"])


def test_works_when_transformers_refuses_the_installed_peft(sd1_lora, monkeypatch):
    """transformers 5.24 refuses peft < 0.22 in its adapter API; the hooks never call it."""
    import transformers.integrations.peft as hf_peft

    def refuse(min_version):
        raise ValueError(f"The version of PEFT you are using is not compatible, please use a version >= {min_version}")

    monkeypatch.setattr(hf_peft, "check_peft_version", refuse)
    unet, te = _tiny_sd1()
    base = _te_out(te)
    patches = LoraPatches("sd1", unet, [te])
    patches.load(sd1_lora["path"])
    patches.set_weights({str(sd1_lora["path"]): 1.0})
    assert not torch.allclose(_te_out(te), base)
