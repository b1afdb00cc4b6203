#!/usr/bin/env python
"""Write a full-size Stable Diffusion 1.5 (or SDXL base) single-file checkpoint with RANDOM, seeded weights.

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

With --family sdxl, the SGM layout of sd_xl_base_1.0.safetensors instead (the UNet with context_dim 2048
and the size/pooled-text label_emb, CLIP-L under conditioner.embedders.0.transformer.*, OpenCLIP bigG under
conditioner.embedders.1.model.*, no schedule).

Usage:
    python tools/make_random_sd15_checkpoint.py OUT.safetensors [--family sd1|sdxl] [--dtype fp16|bf16|fp32]
        [--seed N]

SD1.5 in fp16 (the default) is 2.1 GB (1.99 GiB); building it takes about 6 GB of memory and 35 s on two
CPU cores. SDXL in fp16 is 6.9 GB and takes about 11 GB of memory and 80 s (the UNet is built in fp32).
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
# the released VAE configs (stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0, vae/config.json)
_VAE_EXTRA = dict(in_channels=3, out_channels=3, norm_num_groups=32)
_VAE_FAMILY = {
    "sd1": dict(sample_size=512, scaling_factor=0.18215),
    "sdxl": dict(sample_size=1024, scaling_factor=0.13025),
}
_UNET_SAMPLE = {"sd1": 64, "sdxl": 128}


def _tiny_models():
    """The test helpers' published configs and diffusers -> LDM/SGM renaming (tests/tiny_models.py)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import tiny_models  # noqa: E402

    return tiny_models


def _cast(weights: dict, dtype: torch.dtype) -> dict:
    return {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous() for k, v in weights.items()}


def build_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16, log=print, family: str = "sd1") -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    helpers = _tiny_models()
    published = helpers.PUBLISHED[family]
    tensors: dict[str, torch.Tensor] = {}

    # one module at a time, cast in place and dropped before the next: the peak is the UNet in fp32
    t = time.time()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**published["unet"], sample_size=_UNET_SAMPLE[family], in_channels=4, out_channels=4)
    torch.nn.Module.to(unet, dtype)  # ModelMixin.to warns of fp32-kept modules, which these UNets have none of
    unet_ldm = helpers._unet_to_ldm(unet.state_dict(), dict(unet.config))
    tensors.update({"model.diffusion_model." + k: v for k, v in _cast(unet_ldm, dtype).items()})
    n_unet = sum(p.numel() for p in unet.parameters())
    del unet, unet_ldm
    gc.collect()
    log(f"UNet: {n_unet / 1e6:.0f}M parameters ({time.time() - t:.1f}s)")

    t = time.time()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**published["vae"], **_VAE_EXTRA, **_VAE_FAMILY[family])
    vae_ldm = helpers._vae_to_ldm(vae.state_dict(), dict(vae.config))
    tensors.update({"first_stage_model." + k: v for k, v in _cast(vae_ldm, dtype).items()})
    n_vae = sum(p.numel() for p in vae.parameters())
    del vae, vae_ldm
    gc.collect()
    log(f"VAE: {n_vae / 1e6:.0f}M parameters ({time.time() - t:.1f}s)")

    t = time.time()
    torch.manual_seed(seed + 2)
    text = CLIPTextModel(CLIPTextConfig(**_TEXT_BASE, **published["text"][0]))
    text_sd = helpers.classic_text_names(text.state_dict())
    prefix = "cond_stage_model.transformer." if family == "sd1" else "conditioner.embedders.0.transformer."
    tensors.update({prefix + k: v for k, v in _cast(text_sd, dtype).items()})
    # released SD1.x and SDXL files carry the position ids buffer (newer transformers no longer saves it)
    tensors[prefix + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
    n_text = sum(p.numel() for p in text.parameters())
    del text, text_sd
    gc.collect()
    log(f"CLIP-L text encoder: {n_text / 1e6:.0f}M parameters ({time.time() - t:.1f}s)")
    if family == "sdxl":
        tensors.update(_open_clip_big_g(helpers, published["text"][1], seed + 3, dtype, log))
        return tensors

    # released LDM checkpoints also carry the training schedule (scaled linear betas) and EMA counters
    # made on the CPU whatever the default device: a few KB, and torch.cat needs its inputs on one device
    cpu = torch.device("cpu")
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64, device=cpu) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64, device=cpu), alphas_cumprod[:-1]])
    schedule = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "model_ema.decay": torch.tensor(0.9999, device=cpu),
    }
    tensors.update({k: v.to(dtype) for k, v in schedule.items()})
    tensors["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32, device=cpu)
    return tensors


def _open_clip_big_g(helpers, config: dict, seed: int, dtype: torch.dtype, log) -> dict:
    """SDXL's second text encoder in open_clip's names (in_proj packed q/k/v, text_projection as x @ W)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    t = time.time()
    torch.manual_seed(seed)
    text = CLIPTextModelWithProjection(CLIPTextConfig(**{**_TEXT_BASE, **config}))
    text.to(dtype)
    classic = helpers.classic_text_names(text.state_dict())
    clip = helpers._clip_to_open_clip(classic, extra_block=False, generator=torch.Generator().manual_seed(seed))
    n_text = sum(p.numel() for p in text.parameters())
    del text, classic
    gc.collect()
    log(f"OpenCLIP bigG text encoder: {n_text / 1e6:.0f}M parameters ({time.time() - t:.1f}s)")
    return {"conditioner.embedders.1.model." + k: v for k, v in _cast(clip, dtype).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="where to write the .safetensors checkpoint")
    parser.add_argument("--family", choices=sorted(_UNET_SAMPLE), default="sd1", help="architecture (default sd1)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="weight dtype (default fp16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.output.suffix != ".safetensors":
        parser.error("the output must end in .safetensors")

    from safetensors.torch import save_file

    start = time.time()
    tensors = build_state_dict(args.seed, DTYPES[args.dtype], family=args.family)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".partial")
    layout = "SD1.5 architecture, LDM layout" if args.family == "sd1" else "SDXL base architecture, SGM layout"
    metadata = {"format": "pt", "note": f"random weights, seed {args.seed}: {layout}"}
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(args.output)
    size = args.output.stat().st_size
    print(
        f"wrote {args.output}: {len(tensors)} tensors, {size / 2**30:.2f} GiB, {args.dtype}, {time.time() - start:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
