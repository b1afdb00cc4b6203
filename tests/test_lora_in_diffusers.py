"""kohya LoRA files in diffusers: StableDiffusionPipeline and StableDiffusionXLPipeline load every
module of our SD1 and SDXL files, with no key warnings, exactly the file's weights and alpha/rank,
and an effect on the outputs.

Tiny randomly initialised SD1/SDXL UNets and CLIP text encoders (lora_format_helpers).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from lora_format_helpers import (  # noqa: F401  (sd1_lora, sdxl_lora: fixtures)
    ALPHA,
    RANK,
    _load_into,
    _lora_layers,
    _no_key_warnings,
    _tiny_sd1,
    _tiny_sdxl,
    sd1_lora,
    sdxl_lora,
)

# --------------------------------------------------------------------------------------------
# the LoRA in diffusers


def _assert_applied(model, peft_state):
    """Every module of the file got a LoRA layer holding exactly the file's weights and alpha/rank."""
    layers = _lora_layers(model)
    expected = {k[: -len(".lora_A.weight")] for k in peft_state if k.endswith(".lora_A.weight")}
    assert set(layers) == expected
    for name, layer in layers.items():
        assert torch.equal(layer.lora_A["hs"].weight, peft_state[f"{name}.lora_A.weight"]), name
        assert torch.equal(layer.lora_B["hs"].weight, peft_state[f"{name}.lora_B.weight"]), name
        assert layer.scaling["hs"] == pytest.approx(ALPHA / RANK), name


def _scheduler():
    return DDIMScheduler(steps_offset=1, clip_sample=False)


def test_diffusers_sd1_pipeline_loads_every_module(sd1_lora):
    unet, te = _tiny_sd1()
    pipe = StableDiffusionPipeline(
        vae=None,
        text_encoder=te,
        tokenizer=None,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    torch.manual_seed(0)
    sample, hidden = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 16)
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    with torch.no_grad():
        before = unet(sample, 10, encoder_hidden_states=hidden).sample
        te_before = te(ids).last_hidden_state
    _no_key_warnings(_load_into(pipe, sd1_lora["path"]))
    _assert_applied(pipe.unet, sd1_lora["unet_state"])
    _assert_applied(pipe.text_encoder, sd1_lora["te_state"])
    assert len(_lora_layers(pipe.unet)) == len(sd1_lora["unet_targets"])
    with torch.no_grad():
        after = pipe.unet(sample, 10, encoder_hidden_states=hidden).sample
        te_after = pipe.text_encoder(ids).last_hidden_state
    assert not torch.allclose(before, after)
    assert not torch.allclose(te_before, te_after)


def test_diffusers_sdxl_pipeline_loads_every_module(sdxl_lora):
    unet, te1, te2 = _tiny_sdxl()
    pipe = StableDiffusionXLPipeline(
        vae=None,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=_scheduler(),
    )
    torch.manual_seed(0)
    sample, hidden = torch.randn(1, 4, 16, 16), torch.randn(1, 5, 32)
    cond = {"text_embeds": torch.randn(1, 8), "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]])}
    with torch.no_grad():
        before = unet(sample, 10, encoder_hidden_states=hidden, added_cond_kwargs=cond).sample
    _no_key_warnings(_load_into(pipe, sdxl_lora["path"]))
    states = sdxl_lora["states"]
    _assert_applied(pipe.unet, states["unet"])
    _assert_applied(pipe.text_encoder, states["te1"])
    _assert_applied(pipe.text_encoder_2, states["te2"])
    assert len(_lora_layers(pipe.unet)) == len(sdxl_lora["targets"]["unet"])
    with torch.no_grad():
        after = pipe.unet(sample, 10, encoder_hidden_states=hidden, added_cond_kwargs=cond).sample
    assert not torch.allclose(before, after)
