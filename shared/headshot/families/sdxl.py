"""Stable Diffusion XL (base): an SGM UNet conditioned on CLIP ViT-L and OpenCLIP ViT-bigG together,
plus the pooled bigG embedding and the picture's size and crop (label_emb)."""

from __future__ import annotations

from .family import SGM_UNET_BLOCKS, Family, TextEncoder
from .sgm_layout import sgm_unet_path

SDXL = Family(
    name="sdxl",
    title="SDXL",
    aliases=("sd_xl", "xl"),
    default_resolution=1024,
    context_width=2048,
    text_encoders=(
        TextEncoder(
            component="te1",
            title="CLIP ViT-L",
            width=768,
            checkpoint_prefix="conditioner.embedders.0.transformer.",
            openclip_layout=False,
            model_class="CLIPTextModel",
            subfolder="text_encoder",
            tokenizer_subfolder="tokenizer",
        ),
        TextEncoder(
            component="te2",
            title="OpenCLIP ViT-bigG",
            width=1280,
            checkpoint_prefix="conditioner.embedders.1.model.",
            openclip_layout=True,
            model_class="CLIPTextModelWithProjection",
            subfolder="text_encoder_2",
            tokenizer_subfolder="tokenizer_2",
            pad_token="!",
        ),
    ),
    size_conditioning=True,
    penultimate_text_states=True,
    released_prediction_type="epsilon",
    unet_attention_heads=None,  # num_head_channels 64
    upcast_attention=False,
    vae_scaling_factor=0.13025,  # SGM's SDXL config
    vae_force_upcast=True,  # SDXL's VAE overflows in fp16
    unsupported_variants=(
        (
            "conditioner.embedders.0.model.token_embedding.weight",
            "conditioner.embedders.1.model.token_embedding.weight",
            "an SDXL refiner (only the OpenCLIP bigG text encoder, conditioner.embedders.0.model.*); identity LoRAs "
            "are "
            "trained on the SDXL base model: pass an SDXL base checkpoint.",
        ),
    ),
    kohya_unet_blocks=SGM_UNET_BLOCKS,  # sd-scripts trains SDXL on an SGM-layout UNet
    kohya_unet_path=sgm_unet_path,
    ss_base_model_version="sdxl_base_v1-0",
    ss_base_model_version_v="sdxl_base_v1-0",
    modelspec_architecture="stable-diffusion-xl-v1-base",
    modelspec_architecture_v="stable-diffusion-xl-v1-base",
    modelspec_implementation="https://github.com/Stability-AI/generative-models",
    metadata_markers=("sdxl", "stable-diffusion-xl"),
    sd_scripts_script="sdxl_train_network.py",
    sd_scripts_options={"no_half_vae": True},  # the VAE overflows in fp16; with cached latents it runs once
    diffusers_pipelines={
        "txt": "StableDiffusionXLPipeline",
        "control": "StableDiffusionXLControlNetPipeline",
        "inpaint": "StableDiffusionXLInpaintPipeline",
    },
    a1111_sd_version="SDXL",
    comfyui_model_configs=("SDXL", "SSD1B", "Segmind_Vega", "KOALA_700M", "KOALA_1B"),
)
