"""The VAE encoder's residual blocks run in place while caching latents: the same numbers, and the blocks'
own forward wherever the lean one does not apply (train/lean_resnets.py). A tiny AutoencoderKL of diffusers'
real architecture (random weights): it proves the arithmetic is unchanged, not anything about speed."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_VAE

from headshot.train.lean_resnets import lean_resnets


@pytest.fixture
def vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(**TINY_VAE).eval()


def _resnets(vae):
    return [m for m in vae.encoder.modules() if type(m).__name__ == "ResnetBlock2D"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lean_blocks_give_the_same_latents_bit_for_bit(vae, dtype):
    vae = vae.to(dtype).to(memory_format=torch.channels_last)
    pixels = torch.rand(2, 3, 32, 32).to(dtype).contiguous(memory_format=torch.channels_last) * 2 - 1
    with torch.no_grad():
        plain = vae.encode(pixels).latent_dist.mean
        with lean_resnets(vae.encoder) as changed:
            lean = vae.encode(pixels).latent_dist.mean
    assert changed == len(_resnets(vae)) == 4  # with and without a shortcut convolution, and the middle block's
    assert torch.equal(lean, plain)


def test_with_gradients_and_after_leaving_the_blocks_run_their_own_forward(vae, monkeypatch):
    from diffusers.models.resnet import ResnetBlock2D

    own_calls = []
    real = ResnetBlock2D.forward
    monkeypatch.setattr(ResnetBlock2D, "forward", lambda self, *a, **k: own_calls.append(1) or real(self, *a, **k))
    pixels = torch.rand(1, 3, 32, 32, requires_grad=True)
    with lean_resnets(vae.encoder):
        with torch.no_grad():
            vae.encode(pixels)
        assert own_calls == []
        vae.encode(pixels).latent_dist.mean.sum().backward()
        assert len(own_calls) == 4 and pixels.grad is not None
    assert all("forward" not in vars(block) for block in _resnets(vae))
    with torch.no_grad():
        vae.encode(pixels)
    assert len(own_calls) == 8


def test_a_block_of_another_shape_keeps_its_own_forward(vae):
    blocks = _resnets(vae)
    blocks[0].output_scale_factor = 2.0  # the sum is then halved: not what the lean path computes
    vars(blocks[1])["forward"] = blocks[1].forward  # already wrapped by someone (an offload hook)
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        plain = vae.encode(pixels).latent_dist.mean
        with lean_resnets(vae.encoder) as changed:
            lean = vae.encode(pixels).latent_dist.mean
    assert changed == 2
    assert "forward" in vars(blocks[1])  # the other's wrapper is left where it was
    assert torch.equal(lean, plain)
