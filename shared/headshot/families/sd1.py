"""Stable Diffusion 1.x: an LDM UNet conditioned on OpenAI's CLIP ViT-L/14, trained at 512."""

from __future__ import annotations

from .family import Family, TextEncoder

SD1 = Family(
    name="sd1",
    title="SD 1.x",
    aliases=("sd15", "sd1.5", "sd1x", "sd1.x", "sd_1"),
    default_resolution=512,
    context_width=768,
    text_encoders=(
        TextEncoder(
            component="te",
            title="CLIP ViT-L",
            width=768,
            checkpoint_prefix="cond_stage_model.transformer.",
            openclip_layout=False,
            model_class="CLIPTextModel",
            subfolder="text_encoder",
            tokenizer_subfolder="tokenizer",
        ),
    ),
    size_conditioning=False,
    penultimate_text_states=False,
    released_prediction_type="epsilon",
    unet_attention_heads=8,  # LDM v1 configs: num_heads 8 at every level
    upcast_attention=False,
    vae_scaling_factor=0.18215,  # LDM configs: scale_factor
    vae_force_upcast=False,
    ss_base_model_version="sd_v1",
    ss_base_model_version_v="sd_v1_v",
    modelspec_architecture="stable-diffusion-v1",
    modelspec_architecture_v="stable-diffusion-v1",
    metadata_markers=("sd_v1", "stable-diffusion-v1"),
    sd_scripts_script="train_network.py",
    a1111_sd_version="SD1",
    comfyui_model_configs=("SD15",),
)
