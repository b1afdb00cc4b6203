"""GPU memory budget of LoRA training: SD1.5 at 512 px and SDXL at 1024 px on 8, 12 and 24 GB cards.

What is measured here, on the CPU, without weights or a GPU:
- parameter bytes of every part: the real architectures (the published diffusers configs in
  tests/tiny_models.PUBLISHED, renamed to the single-file layout) built on the meta device;
- LoRA parameters: peft injected on the meta UNet on kohya's targets (headshot.train.lora_targets), rank 16;
- optimizer and gradient bytes: 4 B gradient + 8 B AdamW state (2 B for 8-bit AdamW) per LoRA parameter;
- activations: one forward and backward of the meta UNet (LoRA on, half precision, batch 1) under a
  TorchDispatchMode that adds each op's new output storage when it is made and subtracts it when its
  tensor dies (views and in-place results are not counted again); the peak of that sum is the
  activation memory, with and without gradient checkpointing. Batch b is taken as b x batch 1. Attention is
  counted as a GPU runs it in half precision, through PyTorch's fused kernels (flash or memory-efficient:
  no L x L matrix kept; _FusedAttention); the unfused math path's figure is shown beside it.

What is estimated: the CUDA context, the allocator's slack and autocast keeping norms in fp32, which the
half-precision meta run does not (CONTEXT_GB, ALLOCATOR_SLACK and AUTOCAST_ACTIVATIONS below, from one H200:
they vary with the card and driver). Cached latents and text embeddings stay in CPU memory in the engine and
cost the GPU nothing. On an H200 (benchmarks/gpu_checks.sh) the card needed 4.11 GB for SD1.5 at 512 px
without checkpointing and 8.17 GB for SDXL at 1024 px with it (batch 1, AdamW): compare with this table.

    .venv/bin/python benchmarks/gpu_budget.py [--rank 16] [--markdown]
"""

from __future__ import annotations

import argparse
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
CONTEXT_GB = 0.8  # the CUDA context and libraries: 0.75 GiB measured on an H200 (CUDA 13); less on most cards
ALLOCATOR_SLACK = 0.12  # blocks PyTorch's allocator holds beyond the live tensors: 1-11 % measured on the H200
# autocast keeps norms (and what follows them up to the next conv) in fp32, which the half-precision meta run does
# not count: the H200's activations were 1.53x the count (SD1.5 512 px, no checkpointing), 1.30x (SDXL 1024 px)
AUTOCAST_ACTIVATIONS = 1.5
CARDS = (8, 12, 24)
CASES = (("sd1", "SD1.5", 512), ("sdxl", "SDXL", 1024))


class LiveBytes(TorchDispatchMode):
    """The bytes of tensors made inside the mode and still alive; `peak` is their maximum."""

    def __init__(self):
        super().__init__()
        self.now = self.peak = 0

    def _free(self, n: int) -> None:
        self.now -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.is_mutable or any(r.alias_info is not None for r in func._schema.returns):
            return out  # in-place or a view: no new storage
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                n = t.untyped_storage().nbytes()
                self.now += n
                self.peak = max(self.peak, self.now)
                weakref.finalize(t, self._free, n)
        return out


class _FusedAttention(torch.autograd.Function):
    """The memory of PyTorch's fused attention kernels (flash, memory-efficient), which SDPA runs on a CUDA GPU
    in half precision: the output and one fp32 log-sum-exp a query row kept for the backward, an fp32 gradient
    accumulator in it, never the L x L attention matrix that the math path (all the meta device has) makes and
    keeps. Shapes only: nothing is computed on the meta device."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = query.new_empty(*query.shape[:-1], value.shape[-1])
        log_sum_exp = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, log_sum_exp)
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, _, _ = ctx.saved_tensors
        accumulator = query.new_empty(query.shape, dtype=torch.float32)  # noqa: F841  (alive while the grads are made)
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


def fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    if attn_mask is not None or is_causal:
        raise ValueError("the UNet's attention has no mask")
    return _FusedAttention.apply(query, key, value)


def _published(family: str):
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import PUBLISHED, full_size_ldm_shapes

    return PUBLISHED[family], full_size_ldm_shapes(family)


def part_params(family: str) -> dict[str, int]:
    """Parameter counts of UNet, VAE and text encoders, read off the full-size single-file key set."""
    from headshot.families import get_family

    fam = get_family(family)
    _, shapes = _published(family)
    prefixes = {"UNet": fam.checkpoint_unet_prefix, "VAE": fam.checkpoint_vae_prefix}
    prefixes.update({f"text encoder {i + 1}": e.checkpoint_prefix for i, e in enumerate(fam.text_encoders)})
    return {
        part: sum(t.numel() for k, t in shapes.items() if k.startswith(prefix) and t.is_floating_point())
        for part, prefix in prefixes.items()
    }


def lora_unet(family: str, rank: int):
    """The meta UNet in fp16 with LoRA on kohya's targets; (unet, LoRA parameter count, module count)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model

    from headshot.train.lora_targets import kohya_unet_targets

    published, _ = _published(family)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**published["unet"])
    unet.to(torch.float16)
    targets = kohya_unet_targets(unet)
    config = LoraConfig(r=rank, lora_alpha=rank / 2, init_lora_weights="gaussian", target_modules=targets)
    inject_adapter_in_model(config, unet)
    count = 0
    for name, param in unet.named_parameters():
        trained = "lora_" in name
        param.requires_grad_(trained)
        if trained:
            param.data = param.data.to(torch.float16)  # as autocast runs them
            count += param.numel()
    return unet, count, len(targets)


def activation_bytes(unet, resolution: int, checkpointing: bool, fused: bool = True) -> int:
    """Peak bytes of tensors alive during one batch-1 training step of the meta UNet; `fused`: attention as a
    GPU runs it (see _FusedAttention), else PyTorch's math path (the CPU's, and old GPUs')."""
    if checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    unet.train()
    cfg, side = unet.config, resolution // 8
    with torch.device("meta"):
        sample = torch.randn(1, cfg.in_channels, side, side, dtype=torch.float16)
        context = torch.randn(1, 77, cfg.cross_attention_dim, dtype=torch.float16)
        added = None
        if cfg.addition_embed_type == "text_time":
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            added = {
                "text_embeds": torch.randn(1, pooled, dtype=torch.float16),
                "time_ids": torch.randn(1, 6, dtype=torch.float16),
            }
        timestep = torch.tensor([500])
    live = LiveBytes()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if fused:  # diffusers' attention processor looks the function up on torch.nn.functional at each call
        torch.nn.functional.scaled_dot_product_attention = fused_attention
    try:
        with live:
            out = unet(sample, timestep, encoder_hidden_states=context, added_cond_kwargs=added).sample
            out.float().pow(2).mean().backward()
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    for param in unet.parameters():
        param.grad = None
    return live.peak


def budget(family: str, resolution: int, rank: int) -> dict:
    params = part_params(family)
    unet, lora, modules = lora_unet(family, rank)
    acts = {ckpt: activation_bytes(unet, resolution, ckpt) for ckpt in (True, False)}
    math = {ckpt: activation_bytes(unet, resolution, ckpt, fused=False) for ckpt in (True, False)}
    per_image = 4 * 4 * (resolution // 8) ** 2 + 4 * 77 * unet.config.cross_attention_dim  # fp32 latents + text
    return {
        "params": params,
        "lora": lora,
        "modules": modules,
        "activations": acts,
        "activations_math": math,
        "cached": per_image,
    }


def total_gb(b: dict, *, checkpointing: bool, adam8: bool, batch: int, frozen_text: bool = True) -> float:
    weights = 2 * b["params"]["UNet"]  # fp16/bf16 frozen UNet; VAE freed after caching latents
    if not frozen_text:
        weights += sum(2 * n for part, n in b["params"].items() if part.startswith("text"))
    lora = b["lora"] * (4 + 4 + (2 if adam8 else 8))  # fp32 weights + fp32 gradients + optimizer state
    tensors = weights + lora + batch * b["activations"][checkpointing] * AUTOCAST_ACTIVATIONS
    return tensors * (1 + ALLOCATOR_SLACK) / GIB + CONTEXT_GB


def card_options(b: dict, card: int) -> str:
    """The fastest option set that fits `card` GB (10% kept free), and the largest batch it allows."""
    for checkpointing, adam8 in ((False, False), (True, False), (True, True)):
        fits = [n for n in (1, 2, 4, 8) if total_gb(b, checkpointing=checkpointing, adam8=adam8, batch=n) <= 0.9 * card]
        if fits:
            options = ["fp16/bf16 autocast", "text encoders frozen (cached embeddings)"]
            options.append("gradient checkpointing" if checkpointing else "no checkpointing")
            options.append("8-bit AdamW" if adam8 else "AdamW")
            need = total_gb(b, checkpointing=checkpointing, adam8=adam8, batch=1)
            return f"{', '.join(options)}; batch <= {fits[-1]} ({need:.1f} GiB at batch 1)"
    need = total_gb(b, checkpointing=True, adam8=True, batch=1)
    return f"does not fit with 10% free: checkpointing + 8-bit AdamW need {need:.1f} GiB at batch 1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    for family, title, resolution in CASES:
        b = budget(family, resolution, args.rank)
        p = b["params"]
        print(f"\n### {title} at {resolution} px, LoRA rank {args.rank} on {b['modules']} UNet modules\n")
        print("| part | parameters | GPU bytes (as trained) |")
        print("|---|---|---|")
        for part, n in p.items():
            where = "fp16/bf16" if part == "UNet" else "0 (freed after caching)"
            size = f"{2 * n / GIB:.2f} GiB {where}" if part == "UNet" else where
            print(f"| {part} | {n / 1e6:.0f} M | {size} |")
        lora = b["lora"]
        print(f"| LoRA weights + gradients (fp32) | {lora / 1e6:.1f} M | {8 * lora / GIB:.2f} GiB |")
        print(f"| AdamW state / 8-bit AdamW state | | {8 * lora / GIB:.2f} / {2 * lora / GIB:.2f} GiB |")
        for ckpt, label in ((True, "with"), (False, "without")):
            fused, math = b["activations"][ckpt] / GIB, b["activations_math"][ckpt] / GIB
            print(f"| activations, batch 1, {label} checkpointing | | {fused:.2f} GiB ({math:.2f} GiB unfused) |")
        print(f"| autocast's fp32 norms | | activations x {AUTOCAST_ACTIVATIONS} |")
        print(f"| CUDA context | | {CONTEXT_GB:.1f} GiB |")
        print(f"| allocator slack | | {ALLOCATOR_SLACK:.0%} of the tensors |")
        print(
            f"| cached latents + text embeddings | | 0 (kept in CPU memory: {b['cached'] / 2**10:.0f} KiB a picture) |"
        )
        need = [total_gb(b, checkpointing=c, adam8=False, batch=1) for c in (False, True)]
        print(f"\nbatch 1, AdamW: {need[0]:.2f} GiB without checkpointing, {need[1]:.2f} GiB with")
        print("\n| card | options it needs |")
        print("|---|---|")
        for card in CARDS:
            print(f"| {card} GB | {card_options(b, card)} |")


if __name__ == "__main__":
    main()
