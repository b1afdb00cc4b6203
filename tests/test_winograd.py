"""Large 3x3 convolutions through NNPACK's Winograd kernels (headshot/winograd.py): the same latents to
within rounding, the convolution's own forward wherever NNPACK does not apply or fails. An AutoencoderKL of
diffusers' real architecture, random weights, 64 channels so that its first level qualifies: it proves the
arithmetic and the fallbacks, not the speed (benchmarks/vae_encode_floor.py measures that)."""

from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from headshot import winograd
from headshot.train import caching
from headshot.train.dataset import TrainingImage

pytestmark = pytest.mark.skipif(not winograd.nnpack_works(), reason="this PyTorch or CPU has no working NNPACK")


@pytest.fixture
def vae():
    from diffusers import AutoencoderKL
    from tiny_models import TINY_VAE

    torch.manual_seed(0)
    # the test models' VAE, widened to the 64 channels a convolution needs to take NNPACK
    vae = AutoencoderKL(**{**TINY_VAE, "block_out_channels": (64, 64), "sample_size": 64})
    return vae.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # the engine's layout


class _Calls(list):
    """The input shapes NNPACK was called with, and (`threads`) on which thread each call ran."""

    def __init__(self):
        super().__init__()
        self.threads: list[threading.Thread] = []


@pytest.fixture
def nnpack_calls(monkeypatch):
    calls = _Calls()
    threads = calls.threads
    real = torch._nnpack_spatial_convolution

    def counted(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        threads.append(threading.current_thread())
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", counted)
    monkeypatch.setattr(winograd, "_failed", [])
    return calls


def _pixels(side: int) -> torch.Tensor:
    return (torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1).contiguous(
        memory_format=torch.channels_last
    )


def _qualifying(vae) -> list[torch.nn.Conv2d]:
    return [m for m in vae.encoder.modules() if winograd._fits(m)]


def test_large_convolutions_give_the_same_latents_to_within_rounding(vae, nnpack_calls):
    pixels = _pixels(64)
    with torch.no_grad():
        plain = vae.encode(pixels).latent_dist.mean
        with winograd.winograd_convolutions(vae.encoder, enabled=True) as changed:
            fast = vae.encode(pixels).latent_dist.mean
    # every 64-channel 3x3 convolution is changed (each level's resnet's two, the middle block's four); only
    # the first level's two see 64x64 pixels, the rest 32x32 (too small, their own forward)
    assert changed == len(_qualifying(vae)) == 8
    assert nnpack_calls == [(1, 64, 64, 64)] * 2
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    assert all("forward" not in vars(conv) for conv in _qualifying(vae))  # restored on the way out


def test_nnpack_runs_on_a_thread_that_ends_with_the_encode(vae, nnpack_calls):
    """NNPACK keeps its workspace per thread until the thread ends: never the caller's (training's)."""
    with torch.no_grad(), winograd.winograd_convolutions(vae.encoder, enabled=True):
        vae.encode(_pixels(64))
        vae.encode(_pixels(64))
        workers = set(nnpack_calls.threads)
        assert len(workers) == 1 and threading.current_thread() not in workers
        assert all(worker.is_alive() for worker in workers)
    assert not any(worker.is_alive() for worker in workers)


def test_gradients_small_pictures_and_bf16_use_the_convolutions_own_forward(vae, nnpack_calls):
    with winograd.winograd_convolutions(vae.encoder, enabled=True):
        vae.encode(_pixels(64).requires_grad_(True))  # training: oneDNN's backward
        with torch.no_grad():
            vae.encode(_pixels(32))  # every convolution under 64x64 pixels
            with torch.autocast("cpu", dtype=torch.bfloat16):  # where AMX runs bf16
                vae.encode(_pixels(64))
    assert nnpack_calls == []


def test_an_nnpack_error_falls_back_to_the_same_numbers_and_is_not_tried_again(vae, nnpack_calls, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("NNPACK SpatialConvolution_updateOutput failed")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", broken)
    pixels = _pixels(64)
    with torch.no_grad():
        plain = vae.encode(pixels).latent_dist.mean
        with winograd.winograd_convolutions(vae.encoder, enabled=True) as changed:
            fallen_back = vae.encode(pixels).latent_dist.mean
        assert changed == 8 and torch.equal(fallen_back, plain)
        assert winograd._failed == ["NNPACK SpatialConvolution_updateOutput failed"]
        with winograd.winograd_convolutions(vae.encoder, enabled=True) as changed_again:
            assert changed_again == 0


def test_an_nnpack_that_disagrees_with_conv2d_is_never_used(monkeypatch):
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda x, weight, bias, *a: torch.zeros(1, 16, 12, 12))
    winograd.nnpack_works.cache_clear()
    try:
        assert not winograd.nnpack_works()
    finally:
        monkeypatch.undo()
        winograd.nnpack_works.cache_clear()
    assert winograd.nnpack_works()


def test_the_default_is_avx2_cpus_unless_headshot_winograd_is_0(monkeypatch):
    monkeypatch.delenv("HEADSHOT_WINOGRAD", raising=False)  # a user's own setting would decide otherwise
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert winograd.winograd_pays_off()
    monkeypatch.setenv("HEADSHOT_WINOGRAD", "0")
    assert not winograd.winograd_pays_off()
    monkeypatch.delenv("HEADSHOT_WINOGRAD")
    for capability in ("AVX512", "DEFAULT"):  # AVX-512's oneDNN was not measured against it; below AVX2 no NNPACK
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert not winograd.winograd_pays_off()


def test_caching_latents_on_an_avx2_cpu_goes_through_nnpack(vae, nnpack_calls, tmp_path, monkeypatch):
    Image.new("RGB", (80, 64), (200, 150, 120)).save(tmp_path / "a.png")
    images = [TrainingImage(tmp_path / "a.png", "ohwx woman", 1, "1_ohwx woman")]
    args = (vae, images, 64, True, torch.device("cpu"), torch.float32, 7)
    monkeypatch.setenv("HEADSHOT_WINOGRAD", "0")
    plain = caching.encode_latents(*args)  # with Winograd off: oneDNN's latents
    assert nnpack_calls == []
    monkeypatch.delenv("HEADSHOT_WINOGRAD")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    fast = caching.encode_latents(*args)
    assert len(nnpack_calls) == 4  # the photo and its mirror, two qualifying convolutions each
    for a, b in zip(plain[0], fast[0]):
        assert (b - a).abs().max() < 1e-4 * a.abs().max()  # scaled latents with their noise: about 1
