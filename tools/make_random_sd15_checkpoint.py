#!/usr/bin/env python
"""Write a full-size Stable Diffusion 1.5 single-file checkpoint with RANDOM, seeded weights.

For checking host integrations (ComfyUI, AUTOMATIC1111/Forge, kohya sd-scripts) and our own loader
against a checkpoint that has the real architecture and key layout, where the released weights cannot
be downloaded. It produces noise images, never real ones.

The modules are built with diffusers (UNet2DConditionModel, AutoencoderKL) and transformers
(CLIPTextModel, CLIP ViT-L/14 text tower) from the published SD1.5 configs, and renamed to the original
LDM layout with the test suite's diffusers -> LDM mapping (tests/tiny_models.py):

    model.diffusion_model.*              UNet (model_channels 320, context_dim 768)
    first_stage_model.*                  VAE (KL-f8, 4 latent channels)
    cond_stage_model.transformer.*       CLIP-L text encoder (transformers names)
    betas, alphas_cumprod, ..., model_ema.*   the DDPM schedule and EMA counters, as released files have

Usage:
    python tools/make_random_sd15_checkpoint.py OUT.safetensors [--dtype fp16|bf16|fp32] [--seed N]

fp16 (the default) is 2.1 GB (1.99 GiB); building it takes about 6 GB of memory and 35 s on two CPU cores.
Needs torch, diffusers, transformers and safetensors (`pip install -e .[train]`).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

# transformers' CLIPTextConfig fields that are not shape-bearing but belong to CLIP-L's tokenizer
_TEXT_BASE = dict(
    vocab_size=49408,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    layer_norm_eps=1e-5,
    projection_dim=768,
)
# SD1.x's VAE (stable-diffusion-v1-5/vae/config.json)
_VAE_EXTRA = dict(in_channels=3, out_channels=3, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)


def _mapping():
    """The diffusers -> LDM renaming and the published SD1.5 configs, from the test helpers."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from tiny_models import PUBLISHED, _unet_to_ldm, _vae_to_ldm  # noqa: E402

    return PUBLISHED["sd1"], _unet_to_ldm, _vae_to_ldm


def _cast(weights: dict, dtype: torch.dtype) -> dict:
    return {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous() for k, v in weights.items()}


def build_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16, log=print) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    published, unet_to_ldm, vae_to_ldm = _mapping()
    tensors: dict[str, torch.Tensor] = {}

    # one module at a time, cast and dropped before the next, to keep the peak near 1.5x the UNet in fp32
    t = time.time()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**published["unet"], sample_size=64, in_channels=4, out_channels=4)
    unet_ldm = unet_to_ldm(unet.state_dict(), dict(unet.config))
    tensors.update({"model.diffusion_model." + k: v for k, v in _cast(unet_ldm, dtype).items()})
    n_unet = sum(p.numel() for p in unet.parameters())
    del unet, unet_ldm
    gc.collect()
    log(f"UNet: {n_unet / 1e6:.0f}M parameters ({time.time() - t:.1f}s)")

    t = time.time()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**published["vae"], **_VAE_EXTRA)
    vae_ldm = vae_to_ldm(vae.state_dict(), dict(vae.config))
    tensors.update({"first_stage_model." + k: v for k, v in _cast(vae_ldm, dtype).items()})
    n_vae = sum(p.numel() for p in vae.parameters())
    del vae, vae_ldm
    gc.collect()
    log(f"VAE: {n_vae / 1e6:.0f}M parameters ({time.time() - t:.1f}s)")

    t = time.time()
    torch.manual_seed(seed + 2)
    text = CLIPTextModel(CLIPTextConfig(**_TEXT_BASE, **published["text"][0]))
    text_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in text.state_dict().items()}
    tensors.update({"cond_stage_model.transformer." + k: v for k, v in _cast(text_sd, dtype).items()})
    # released SD1.x files carry the position ids buffer (newer transformers no longer saves it)
    tensors["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    n_text = sum(p.numel() for p in text.parameters())
    del text, text_sd
    gc.collect()
    log(f"CLIP-L text encoder: {n_text / 1e6:.0f}M parameters ({time.time() - t:.1f}s)")

    # released LDM checkpoints also carry the training schedule (scaled linear betas) and EMA counters
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    schedule = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "model_ema.decay": torch.tensor(0.9999),
    }
    tensors.update({k: v.to(dtype) for k, v in schedule.items()})
    tensors["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    return tensors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="where to write the .safetensors checkpoint")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="weight dtype (default fp16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.output.suffix != ".safetensors":
        parser.error("the output must end in .safetensors")

    from safetensors.torch import save_file

    start = time.time()
    tensors = build_state_dict(args.seed, DTYPES[args.dtype])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".partial")
    metadata = {"format": "pt", "note": f"random weights, seed {args.seed}: SD1.5 architecture, LDM layout"}
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(args.output)
    size = args.output.stat().st_size
    print(
        f"wrote {args.output}: {len(tensors)} tensors, {size / 2**30:.2f} GiB, {args.dtype}, {time.time() - start:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
