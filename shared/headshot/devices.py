"""Which device and precision to run on: shared by training and sampling, so it sits below both."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from contextlib import contextmanager

import torch

from .errors import HeadshotError


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype for `mixed_precision` ("auto" | "no" | "fp16" | "bf16"), None for fp32.

    "auto": bf16 where the GPU has it, else fp16; fp32 on the CPU (autocast there is slower).
    An explicit bf16 runs on the CPU too (PyTorch's CPU autocast); fp16 needs a GPU.
    """
    if mixed_precision == "no":
        return None
    if device.type == "cpu":
        if mixed_precision == "fp16":
            raise HeadshotError("fp16 mixed precision needs a GPU; on the CPU use bf16 or no", "bad_option")
        return torch.bfloat16 if mixed_precision == "bf16" else None
    if mixed_precision == "fp16":
        return torch.float16
    if mixed_precision == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX, Xeon 4th generation on).

    There oneDNN runs bf16 convolutions several times faster than fp32 (the SD VAE encoder at 256 px: 0.17 s
    against 0.89 s a picture on a 2-core Xeon); without AMX bf16 is slower than fp32, even with AVX512-BF16
    (1.23 s there). PyTorch's check is private: where it is missing, the answer is no (fp32, never a crash).
    """
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(check()) if check is not None else False
    except (RuntimeError, AttributeError):
        return False


def _glibc():
    """The C library when it is glibc (mallopt, malloc_trim), else None (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # glibc's own: musl has no such symbol  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def return_freed_memory() -> None:
    """Hand memory the process has freed back to the system (glibc's malloc_trim).

    glibc keeps freed blocks below its mmap threshold (which grows to 32 MB) in the heap, so a stage's
    freed activations (the VAE's, one picture at a time) still count in the process's memory when the
    next stage (the UNet) loads; trimming keeps the peak at what is alive. Elsewhere (macOS, Windows,
    musl) there is nothing to call.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def free_device_memory(device: torch.device) -> None:
    """Collect what was just dropped and, on a GPU, hand its cached blocks back to the driver."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
#: where glibc's own thresholds settle in a PyTorch process (its dynamic mmap threshold grows to 32 MB
#: once such a block is freed, the trim threshold to twice that): what `reusing_freed_memory` leaves behind
_SETTLED_MMAP_THRESHOLD, _SETTLED_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 32 << 20, 64 << 20, 65536
_reuse_lock = threading.Lock()
_reuse_depth = 0


def _allocator_chosen_by_user() -> bool:
    # another malloc preloaded (jemalloc, tcmalloc), or glibc tuned through its environment: theirs to keep
    return bool(os.environ.get("LD_PRELOAD")) or any(
        name.startswith(("MALLOC_", "GLIBC_TUNABLES")) for name in os.environ
    )


@contextmanager
def reusing_freed_memory(device):
    """On the CPU, while inside: blocks the process frees stay in its heap for the next allocation, then
    everything freed goes back to the system.

    glibc gives every block over its mmap threshold (at most 32 MB) fresh pages from the kernel, and each
    first touch of a page is a fault that zeroes it; the VAE's activations at 512 px are 67 MB a tensor, so
    every group norm, SiLU and residual add paid for new pages: about 40 % of a bf16 encode on a 2-core Xeon
    (1.16 s a picture, 0.68 s with the blocks reused). Inside, nothing is mapped fresh and nothing trimmed;
    on leaving, the thresholds are set where glibc's own settle and the freed memory is returned, so the
    peak is the stage's working set, as before. Nested and concurrent uses restore on the last exit. Nothing
    changes on a GPU (activations live in its memory), off glibc, or where the user chose the allocator
    (LD_PRELOAD, MALLOC_* or GLIBC_TUNABLES in the environment).
    """
    global _reuse_depth
    libc = _glibc() if torch.device(device).type == "cpu" and not _allocator_chosen_by_user() else None
    if libc is None:
        yield
        return
    with _reuse_lock:
        if _reuse_depth == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        _reuse_depth += 1
    try:
        yield
    finally:
        with _reuse_lock:
            _reuse_depth -= 1
            if _reuse_depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_MMAP_THRESHOLD, _SETTLED_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _SETTLED_TRIM_THRESHOLD)
                libc.malloc_trim(0)
