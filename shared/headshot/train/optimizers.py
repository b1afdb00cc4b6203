"""The optimizer and learning-rate schedule of the builtin engine."""

from __future__ import annotations

import math

import torch

from ..errors import HeadshotError


def optimizer_class(name: str):
    """The optimizer class for `name`; an optional package that is missing or broken is a clear error.

    Called before the base model loads, so a run asked for 8-bit AdamW without bitsandbytes stops at
    once instead of after minutes of loading and caching. An explicit choice is never swapped for
    another silently: the message says which option to use instead.
    """
    if name == "adamw":
        return torch.optim.AdamW
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit
        except Exception as e:  # ImportError, or a bitsandbytes build that fails to set itself up
            raise HeadshotError(
                f"optimizer adamw8bit needs bitsandbytes ({type(e).__name__}: {e}); pip install bitsandbytes "
                "(CUDA GPUs), or use --optimizer adamw (plain AdamW: 8 bytes more per trained parameter)",
                "missing_optimizer",
            ) from None
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy

            return Prodigy
        except ImportError:
            raise HeadshotError(
                "optimizer prodigy needs prodigyopt (pip install prodigyopt); or use --optimizer adamw",
                "missing_optimizer",
            ) from None
    raise HeadshotError(f"unknown optimizer {name!r}", "bad_option")


def make_optimizer(name: str, params, lr: float):
    cls = optimizer_class(name)
    if name == "prodigy":
        return cls(params, lr=lr, weight_decay=1e-2, safeguard_warmup=True, use_bias_correction=True)
    return cls(params, lr=lr, weight_decay=1e-2)


def grad_scaler(device: torch.device, autocast: torch.dtype | None):
    """Loss scaling for fp16 autocast (small fp16 gradients flush to zero without it); None for bf16/fp32,
    whose exponent range needs none."""
    if autocast != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def make_lr_schedule(name: str, optimizer, warmup: int, total: int):
    """LambdaLR so its state is a plain step count that resumes exactly."""

    def factor(step: int) -> float:
        if warmup and step < warmup and name != "constant":
            return (step + 1) / warmup
        if name in ("constant", "constant_with_warmup"):
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if name == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))  # cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
