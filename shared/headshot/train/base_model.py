"""A base model ready for LoRA training: its modules, family, prediction type and training schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PREDICTION_TYPES = ("epsilon", "v_prediction")
CLIP_MAX_LENGTH = 77  # every SD text encoder has 77 positions

# the training schedule shared by SD1, SD2 and SDXL (LDM/SGM configs: linear_start 0.00085,
# linear_end 0.012, 1000 timesteps, "scaled_linear" in diffusers' words)
TRAIN_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}

Progress = Callable[[str], None]


@dataclass
class BaseModel:
    """A base model ready for LoRA training: diffusers/transformers modules, frozen and in eval mode."""

    family: str  # a registered family's name: "sd1" | "sd2" | "sdxl"
    prediction_type: str  # "epsilon" | "v_prediction"
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoders: list  # one per the family's text encoder, in its order (CLIPTextModel[WithProjection])
    tokenizers: list  # a CLIPTokenizer per text encoder, model_max_length 77
    noise_scheduler: Any  # DDPMScheduler with the training schedule and prediction_type
    source: str  # what was loaded: a path or a hub id
    unet_loader: Any = None  # with defer_unet: builds the UNet on first ensure_unet()
    # with defer_encoders: vae is None and text_encoders and tokenizers are empty until ensure_encoders()
    encoders_loader: Any = None  # () -> (vae, text_encoders, tokenizers)
    vae_config: Any = None  # the VAE's config, known before its weights are read

    def ensure_encoders(self) -> None:
        """The VAE, the text encoders and their tokenizers, loading them now if they were deferred (a run whose
        latents and text embeddings are all in its input cache never needs them)."""
        if self.encoders_loader is not None:
            self.vae, self.text_encoders, self.tokenizers = self.encoders_loader()
            self.encoders_loader = None
            for module in (self.vae, *self.text_encoders):
                module.requires_grad_(False)
                module.eval()

    def vae_downscale(self) -> int:
        """How many pixels a side one latent stands for (8 for every SD VAE), loaded or deferred."""
        config = self.vae.config if self.vae is not None else self.vae_config
        return 2 ** (len(config["block_out_channels"]) - 1)

    def ensure_unet(self):
        """The UNet, loading it now if it was deferred (so latents and text can be cached first
        and the VAE and text encoders freed before the largest module arrives)."""
        if self.unet is None:
            self.unet = self.unet_loader()
            self.unet.requires_grad_(False)
            self.unet.eval()
            self.unet_loader = None
        return self.unet


def training_noise_scheduler(prediction_type: str = "epsilon"):
    """The DDPM training schedule of SD1/SD2/SDXL (scaled_linear 0.00085..0.012, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**TRAIN_SCHEDULE, prediction_type=prediction_type, clip_sample=False)


def diffusers_pipeline(base: BaseModel, kind: str, scheduler, **extra):
    """A diffusers pipeline ("txt", "control" or "inpaint", as the family names them) over the base model's
    live modules, no copy: the family's text encoders under their diffusers names, no safety checker."""
    import inspect

    import diffusers

    from ..families import get_family

    family = get_family(base.family)
    cls = getattr(diffusers, family.diffusers_pipelines[kind])
    parts = dict(vae=base.vae, unet=base.ensure_unet(), scheduler=scheduler, **extra)
    for spec, encoder, tokenizer in zip(family.text_encoders, base.text_encoders, base.tokenizers):
        parts[spec.subfolder], parts[spec.tokenizer_subfolder] = encoder, tokenizer
    if "safety_checker" in inspect.signature(cls.__init__).parameters:  # SD 1/2 pipelines ask for one
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe
