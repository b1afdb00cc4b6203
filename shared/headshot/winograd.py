"""Large 3x3 convolutions through NNPACK's Winograd kernels on AVX2 CPUs, for inference only.

oneDNN, PyTorch's CPU convolution, computes a 3x3 convolution directly; Winograd's algorithm (NNPACK, built
into PyTorch's x86 wheels) does the same sums with fewer multiplications. On a 2-core AMD EPYC (AVX2, no
AVX-512) in fp32: a 128-channel 256x256 convolution 0.18 -> 0.09 s, 256 channels at 128x128 0.16 -> 0.06 s,
512 at 64x64 0.15 -> 0.07 s; the SD VAE encoder 1.69 -> 1.10 s a 256 px picture and 6.8 -> 3.7 s at 512 px,
its latents within 2e-5 of oneDNN's (relative to their largest value). NNPACK transforms the weights on
every call, so small pictures with many channels lose (1280 channels at 16x16: 0.09 -> 0.12 s): only
convolutions of at least 64x64 pixels and 64 channels in and out take it. Where the CPU has AVX-512
oneDNN's fp32 kernels are twice as wide and nothing here was measured, so the default is AVX2 alone (and
never bf16, which oneDNN runs on AMX). The operator is private to PyTorch: it is checked against
F.conv2d once per process before first use, any error falls back to the convolution's own forward for the
rest of the process, and HEADSHOT_WINOGRAD=0 turns it off.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeGuard

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: below this many output pixels a picture is too small for the weight transform to pay off
MIN_PIXELS = 64 * 64
MIN_CHANNELS = 64
_failed: list[str] = []  # the first error, once NNPACK failed in this process


def _nnpack_convolution(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():  # grad mode is per thread: the caller's may be off where this one's is not
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [1, 1], [1, 1])


@functools.lru_cache(maxsize=1)
def nnpack_works() -> bool:
    """Whether this PyTorch has NNPACK, it initialises on this CPU (AVX2 and up) and agrees with F.conv2d."""
    available = getattr(torch, "_nnpack_available", None)
    try:
        if available is None or not available():  # also initialises NNPACK, which its convolution needs
            return False
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1, 8, 12, 12, generator=generator)
        weight, bias = torch.randn(16, 8, 3, 3, generator=generator), torch.randn(16, generator=generator)
        expected = F.conv2d(x, weight, bias, padding=1)
        with torch.no_grad():
            got = _nnpack_convolution(x, weight, bias)
        return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=1e-4, atol=1e-4))
    except (RuntimeError, AttributeError, TypeError) as error:
        log.info("NNPACK convolutions are off: %s", error)
        return False


def winograd_pays_off() -> bool:
    """The default: NNPACK works, the CPU is AVX2 without AVX-512 (where it was measured) and the user did
    not turn it off with HEADSHOT_WINOGRAD=0."""
    if os.environ.get("HEADSHOT_WINOGRAD", "").strip() == "0":
        return False
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "")()
    return capability == "AVX2" and nnpack_works()


def _cpu_autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch before 2.4 (the hosts pin their own)
        return torch.is_autocast_cpu_enabled()


def _fits(conv: torch.nn.Module) -> TypeGuard[torch.nn.Conv2d]:
    return (
        type(conv) is torch.nn.Conv2d
        and "forward" not in vars(conv)  # someone's hook already wraps it
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS
    )


def _winograd_forward(conv: torch.nn.Conv2d, worker: ThreadPoolExecutor):
    own = type(conv).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        weight = conv.weight
        if (
            _failed
            or torch.is_grad_enabled()
            or x.dim() != 4
            or x.shape[-1] * x.shape[-2] < MIN_PIXELS
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or weight.dtype != torch.float32
            or _cpu_autocast_on()
        ):
            return own(conv, x)
        try:
            return worker.submit(_nnpack_convolution, x, weight, conv.bias).result()
        except RuntimeError as error:  # a PyTorch whose private operator changed: oneDNN from now on
            _failed.append(str(error))
            log.warning("NNPACK convolution failed (%s); using PyTorch's own convolutions from now on", error)
            return own(conv, x)

    return forward


@contextmanager
def winograd_convolutions(module: torch.nn.Module, enabled: bool | None = None) -> Iterator[int]:
    """While inside, the large fp32 3x3 convolutions under `module` run through NNPACK on the CPU, with
    gradients off (see the module's docstring). `enabled` None: `winograd_pays_off()`. Yields how many
    convolutions were changed (0 when off); on the given instance only, restored on the way out."""
    on = winograd_pays_off() if enabled is None else enabled and nnpack_works()
    changed = [conv for conv in module.modules() if _fits(conv)] if on and not _failed else []
    if not changed:
        yield 0
        return
    # NNPACK keeps a workspace per calling thread, as large as the largest convolution's transforms, until the
    # thread ends (0.13 GB after a 256 px encode): on a thread of its own, ended on the way out, nothing of it
    # stays for training
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="winograd") as worker:
        for conv in changed:
            vars(conv)["forward"] = _winograd_forward(conv, worker)  # the instance only; popped on the way out
        try:
            yield len(changed)
        finally:
            for conv in changed:
                vars(conv).pop("forward", None)
