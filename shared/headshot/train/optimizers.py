"""The optimizer and learning-rate schedule of the builtin engine."""

from __future__ import annotations

import math

import torch

from ..errors import HeadshotError


def make_optimizer(name: str, params, lr: float):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise HeadshotError(
                "optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes, CUDA only); "
                "or use --optimizer adamw",
                "missing_optimizer",
            ) from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=1e-2)
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise HeadshotError(
                "optimizer prodigy needs prodigyopt (pip install prodigyopt); or use --optimizer adamw",
                "missing_optimizer",
            ) from None
        return Prodigy(params, lr=lr, weight_decay=1e-2, safeguard_warmup=True, use_bias_correction=True)
    raise HeadshotError(f"unknown optimizer {name!r}", "bad_option")


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
