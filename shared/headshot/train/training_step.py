"""One training step's pieces: the LoRA layers injected, the batch for a step, and the denoising
loss with its Min-SNR weights.

One step is exactly one UNet forward and backward on cached latents and cached text embeddings;
everything else (noise, timesteps, loss weighting) is a few tensor ops.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ..families import get_family
from .caching import encode_prompt
from .dataset import TrainingImage, caption_variants, epoch_order
from .settings import TrainSettings


def add_lora(model, targets: list[str], rank: int, alpha: float, seed: int) -> list[torch.nn.Parameter]:
    """Inject peft LoRA layers on exactly `targets`; returns the trainable parameters (fp32)."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)  # LoRA-A initialisation is random: repeatable runs need it seeded
    # peft annotates lora_alpha as int; it only computes alpha / r, and kohya alphas are floats
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets)  # type: ignore[arg-type]
    inject_adapter_in_model(config, model)
    params = []
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()
            param.requires_grad_(True)
            params.append(param)
        else:
            param.requires_grad_(False)
    return params


def min_snr_weight(scheduler, timesteps: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023), in the form for ε- or v-prediction targets."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if v_prediction else clipped / snr


def diffusion_loss(
    base, latents, hidden, pooled, settings: TrainSettings, generator: torch.Generator, autocast: torch.dtype | None
) -> torch.Tensor:
    """Per-sample denoising loss for one batch of cached latents and text conditioning."""
    unet, scheduler = base.unet, base.noise_scheduler
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator)
    if settings.noise_offset:
        noise += settings.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=generator)
    noise = noise.to(device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator).to(
        device
    )
    noisy = scheduler.add_noise(latents, noise, timesteps)
    added = None
    if get_family(base.family).size_conditioning:
        res = settings.resolution
        # size/crop conditioning: the crops were made square at this size with no further crop
        time_ids = torch.tensor([[res, res, 0, 0, res, res]], dtype=hidden.dtype, device=device).repeat(
            latents.shape[0], 1
        )
        added = {"text_embeds": pooled, "time_ids": time_ids}
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        prediction = unet(noisy, timesteps, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    v_prediction = base.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if settings.min_snr_gamma:
        loss = loss * min_snr_weight(scheduler, timesteps, settings.min_snr_gamma, v_prediction)
    return loss


def step_batch(
    step: int,
    settings: TrainSettings,
    images: list[TrainingImage],
    latents_cache: list,
    text_cache: list | None,
    base,
    device: torch.device,
):
    """Latents and conditioning for optimizer step `step` (deterministic in seed and step)."""
    s = settings
    per_epoch = sum(img.repeats for img in images)
    latents, hidden, pooled = [], [], []
    for k in range(s.batch_size):
        position = step * s.batch_size + k
        epoch, index = divmod(position, per_epoch)
        i = epoch_order(images, epoch, s.seed)[index]
        pick = random.Random(s.seed * 7919 + position)
        variants = latents_cache[i]
        latents.append(variants[pick.randrange(len(variants))])
        if text_cache is not None:
            emb = text_cache[i][pick.randrange(len(text_cache[i]))]
        else:
            text = (
                caption_variants(images[i].caption, 2, s.seed + position)[-1]
                if s.shuffle_captions
                else images[i].caption
            )
            emb = encode_prompt(base, text, device, with_grad=True)
        hidden.append(emb.hidden)
        pooled.append(emb.pooled)
    weights_dtype = next(base.unet.parameters()).dtype
    hidden_t = torch.stack(hidden).to(device, weights_dtype)
    pooled_t = torch.stack(pooled).to(device, weights_dtype) if pooled[0] is not None else None
    return torch.stack(latents).to(device, weights_dtype), hidden_t, pooled_t
