"""Prompt reading for the standalone sampler: chunks past 77 tokens and (text:w) weights, like the hosts.

Uses the real CLIP tokenizer (built from open_clip's vocabulary) and a tiny random CLIP text
encoder: it proves the chunking and weighting arithmetic, not text understanding.
"""

from __future__ import annotations

import dataclasses

import pytest
import tiny_models
import torch

from headshot.sampling.prompt_encoding import CHUNK, encode_prompts, parse_weights
from headshot.train.base_model_loading import load_base_model


def test_weights_and_escapes_are_parsed():
    assert parse_weights("photo of ohwx, (soft light:1.2), a \\(1990\\) car") == [
        ("photo of ohwx, ", 1.0),
        ("soft light", 1.2),
        (", a (1990) car", 1.0),
    ]


@pytest.fixture(scope="module")
def tiny_sd1(tmp_path_factory):
    return load_base_model(tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("sd1")))


def test_long_prompts_are_chunked_and_negative_padded_to_match(tiny_sd1):
    long_prompt = ", ".join(f"word{i}" for i in range(60))  # far past 75 tokens
    out = encode_prompts(tiny_sd1, long_prompt, "blurry", "cpu")
    assert out["prompt_embeds"].shape[1] % 77 == 0 and out["prompt_embeds"].shape[1] > 77
    assert out["negative_prompt_embeds"].shape == out["prompt_embeds"].shape
    short = encode_prompts(tiny_sd1, "ohwx woman", "blurry", "cpu")
    assert short["prompt_embeds"].shape[1] == 77


def test_a_weight_scales_only_its_own_tokens(tiny_sd1):
    plain = encode_prompts(tiny_sd1, "ohwx woman, soft light", "", "cpu")["prompt_embeds"][0]
    weighted = encode_prompts(tiny_sd1, "ohwx woman, (soft light:1.5)", "", "cpu")["prompt_embeds"][0]
    ids = tiny_sd1.tokenizers[0]("ohwx woman, soft light", add_special_tokens=False).input_ids
    n_light = len(tiny_sd1.tokenizers[0]("soft light", add_special_tokens=False).input_ids)
    light = slice(1 + len(ids) - n_light, 1 + len(ids))  # after the start token
    ratio = (weighted[light] / plain[light]).mean() / (weighted[: light.start] / plain[: light.start]).mean()
    assert ratio == pytest.approx(1.5, rel=0.02)
    assert CHUNK == 75


def test_sdxl_uses_both_encoders_and_the_pooled_projection(tmp_path):
    base = load_base_model(tiny_models.make_tiny_sdxl(tmp_path / "sdxl"))
    out = encode_prompts(base, "ohwx man, (studio light:1.1)", "blurry", "cpu")
    widths = sum(encoder.config.hidden_size for encoder in base.text_encoders)
    assert out["prompt_embeds"].shape == (1, 77, widths)
    assert out["pooled_prompt_embeds"].shape == (1, base.text_encoders[1].config.projection_dim)
    assert out["negative_pooled_prompt_embeds"].shape == out["pooled_prompt_embeds"].shape


class _ZeroMeanEncoder(torch.nn.Module):
    """Stand-in text encoder: states of +1 and -1 in equal numbers, whose mean is exactly 0, as a randomly
    initialised (layer-normed) encoder's can be on CPUs that sum exactly."""

    def forward(self, ids, output_hidden_states=False):
        states = torch.ones(1, ids.shape[1], 8)
        states[..., ::2] = -1.0
        return (states,)


def test_states_averaging_zero_stay_finite_plain_and_weighted(tiny_sd1):
    base = dataclasses.replace(tiny_sd1, text_encoders=[_ZeroMeanEncoder()])
    plain = encode_prompts(base, "ohwx woman, soft light", "", "cpu")["prompt_embeds"][0]
    assert torch.equal(plain, _ZeroMeanEncoder()(torch.zeros(1, 77))[0][0])  # no weight: the states as they are
    weighted = encode_prompts(base, "ohwx woman, (soft light:1.5)", "", "cpu")["prompt_embeds"][0]
    assert torch.isfinite(weighted).all()
    assert weighted.abs().max().item() == pytest.approx(1.5)  # the weighted tokens, not renormalised by 0/0
