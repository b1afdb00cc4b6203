"""Which device and precision to run on: shared by training and sampling, so it sits below both."""

from __future__ import annotations

import ctypes
import sys

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


def return_freed_memory() -> None:
    """Hand memory the process has freed back to the system (glibc's malloc_trim).

    glibc keeps freed blocks below its mmap threshold (which grows to 32 MB) in the heap, so a stage's
    freed activations (the VAE's, one picture at a time) still count in the process's memory when the
    next stage (the UNet) loads; trimming keeps the peak at what is alive. Elsewhere (macOS, Windows,
    musl) there is nothing to call.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
