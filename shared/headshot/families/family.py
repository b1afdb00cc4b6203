"""What a base-model family is: the facts every stage asks about, as data.

A family module (sd1.py, sd2.py, sdxl.py) fills one `Family`; the registry lists them, and the
detection rules (checkpoint_detection, lora_detection) read these fields rather than naming any
family. A new family (SD3, Flux) is a new module with its own values and one registry line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# kohya's UNet LoRA names start with the block names of the layout the family is trained in
DIFFUSERS_UNET_BLOCKS = ("down_blocks", "mid_block", "up_blocks")
SGM_UNET_BLOCKS = ("input_blocks", "middle_block", "output_blocks")


def diffusers_unet_path(module: str, unet_config: Any = None) -> str:
    """SD1/SD2: kohya names UNet LoRA modules by their diffusers path, unchanged."""
    return module


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of a family, where each format keeps it and how it is read."""

    component: str  # kohya's LoRA component: "te" (one encoder) or "te1" / "te2"
    title: str  # "CLIP ViT-L", for messages
    width: int  # hidden size in the full-size model (768, 1024, 1280)
    checkpoint_prefix: str  # its keys in a single-file (LDM/SGM) checkpoint
    openclip_layout: bool  # stored in open_clip's layout and using gelu (else transformers' CLIP, quick_gelu)
    model_class: str  # transformers class: CLIPTextModel or CLIPTextModelWithProjection
    subfolder: str  # diffusers folder: text_encoder, text_encoder_2
    tokenizer_subfolder: str  # diffusers folder: tokenizer, tokenizer_2
    pad_token: str | None = None  # OpenCLIP pads with token 0 ("!"); None keeps CLIP's <|endoftext|>
    drop_last_layer: bool = False  # SD2 reads the penultimate block, so diffusers' encoder ends one block early


@dataclass(frozen=True)
class Family:
    """Everything the stages need to know about one base-model family."""

    name: str  # our id: "sd1"
    title: str  # for people: "SD 1.x"
    aliases: tuple[str, ...]  # other spellings users and tools write ("sd15", "sd1.5", ...)
    default_resolution: int  # the side the family was trained at (512, 768, 1024)
    context_width: int  # cross-attention width of the full-size UNet (sum of the text widths)
    text_encoders: tuple[TextEncoder, ...]
    size_conditioning: bool  # the UNet also takes pooled text + size/crop numbers (SDXL's label_emb)
    penultimate_text_states: bool  # conditions on the text encoders' penultimate hidden states
    released_prediction_type: str | None  # None: released as both epsilon and v, only the weights tell

    # the single-file (LDM / SGM) layout
    unet_attention_heads: int | None  # heads per level fixed by the config (LDM v1: 8); None: 64-wide heads
    upcast_attention: bool  # the reference config upcasts attention (fp16 overflow)
    vae_scaling_factor: float
    vae_force_upcast: bool  # the VAE overflows in fp16
    checkpoint_unet_prefix: str = "model.diffusion_model."
    checkpoint_vae_prefix: str = "first_stage_model."
    # a single file that is a variant of this family we cannot train on: (marker key, absent key, why)
    unsupported_variants: tuple[tuple[str, str, str], ...] = ()

    # kohya LoRA files and sd-scripts
    kohya_unet_blocks: tuple[str, ...] = DIFFUSERS_UNET_BLOCKS
    kohya_unet_path: Callable[[str, Any], str | None] = diffusers_unet_path  # diffusers module -> kohya path
    ss_base_model_version: str = ""  # as sd-scripts writes it
    ss_base_model_version_v: str = ""  # the same for a v-prediction model
    ss_v2: bool = False
    modelspec_architecture: str = ""  # sd-scripts' sai_model_spec ids ("/lora" is appended for LoRAs)
    modelspec_architecture_v: str = ""
    modelspec_implementation: str = "diffusers"
    metadata_markers: tuple[str, ...] = ()  # substrings of ss_base_model_version / modelspec.architecture
    sd_scripts_script: str = "train_network.py"
    sd_scripts_network_module: str = "networks.lora"
    sd_scripts_options: Mapping[str, Any] = field(default_factory=dict)  # config keys this family needs

    # diffusers pipeline classes for text-to-image, ControlNet and inpainting (standalone sampling)
    diffusers_pipelines: Mapping[str, str] = field(
        default_factory=lambda: {
            "txt": "StableDiffusionPipeline",
            "control": "StableDiffusionControlNetPipeline",
            "inpaint": "StableDiffusionInpaintPipeline",
        }
    )

    # style files: a family without its own [table] in a style borrows this one's ("sd2" -> "sd1")
    style_fallback: str | None = None

    # names the hosts use
    a1111_sd_version: str = ""  # the A1111 sidecar's "sd version"
    comfyui_model_configs: tuple[str, ...] = ()  # ComfyUI supported_models class names (prefixes)

    @property
    def text_components(self) -> tuple[str, ...]:
        """kohya's text-encoder components in encoder order: ("te",) or ("te1", "te2")."""
        return tuple(encoder.component for encoder in self.text_encoders)

    def base_model_version(self, v_prediction: bool = False) -> str:
        return self.ss_base_model_version_v if v_prediction else self.ss_base_model_version

    def architecture(self, v_prediction: bool = False) -> str:
        return self.modelspec_architecture_v if v_prediction else self.modelspec_architecture
