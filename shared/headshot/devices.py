"""Which device and precision to run on: shared by training and sampling, so it sits below both."""

from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, mixed_precision: str) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; the CPU trains in fp32 (autocast there is slower)."""
    if device.type == "cpu" or mixed_precision == "no":
        return None
    if mixed_precision == "fp16":
        return torch.float16
    if mixed_precision == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16
