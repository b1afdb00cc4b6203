"""Stable Diffusion 2.x: an LDM UNet conditioned on OpenCLIP ViT-H/14's penultimate layer.

Released both as epsilon models (2.x-base, 512) and v-prediction models (768-v), so only the weights
can tell which one a file is.
"""

from __future__ import annotations

from .family import Family, TextEncoder

SD2 = Family(
    name="sd2",
    title="SD 2.x",
    aliases=("sd21", "sd2.1", "sd2x", "sd2.x"),
    default_resolution=768,
    context_width=1024,
    text_encoders=(
        TextEncoder(
            component="te",
            title="OpenCLIP ViT-H",
            width=1024,
            checkpoint_prefix="cond_stage_model.model.",
            openclip_layout=True,
            model_class="CLIPTextModel",
            subfolder="text_encoder",
            tokenizer_subfolder="tokenizer",
            pad_token="!",
            drop_last_layer=True,
        ),
    ),
    size_conditioning=False,
    penultimate_text_states=False,  # the dropped last layer already makes the output the penultimate one
    released_prediction_type=None,
    unet_attention_heads=None,  # num_head_channels 64
    upcast_attention=True,  # the 768-v config upcasts attention (fp16 overflow)
    vae_scaling_factor=0.18215,
    vae_force_upcast=False,
    ss_base_model_version="sd_v2",
    ss_base_model_version_v="sd_v2_v",
    ss_v2=True,
    modelspec_architecture="stable-diffusion-v2-512",
    modelspec_architecture_v="stable-diffusion-v2-768-v",
    metadata_markers=("sd_v2", "stable-diffusion-v2"),
    sd_scripts_script="train_network.py",
    sd_scripts_options={"v2": True},  # v-prediction models also need v_parameterization
    a1111_sd_version="SD2",
    comfyui_model_configs=("SD2",),
    style_fallback="sd1",  # SD 2.x draws well with the SD 1.x prompts of a style
)
