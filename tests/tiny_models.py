"""Tiny, seeded Stable Diffusion models for the test suite (a helper module, not a test file).

The builders write real diffusers folders (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/) whose modules have the architecture of SD1.x, SD2.x or SDXL at toy
widths, with CLIP's real tokenizer files (built from open_clip's BPE vocabulary).
`save_single_file` writes the same weights in the original single-file layouts: LDM for SD1/SD2
(model.diffusion_model.*, first_stage_model.*, cond_stage_model.*) and SGM for SDXL
(conditioner.embedders.*). It, the diffusers -> LDM/SGM renaming and the full-size key sets
(`PUBLISHED`, `full_size_ldm_shapes`) live in tests/tiny_single_files.py and are re-exported here.

Random tiny weights prove wiring and formats, never image quality.

Conventions the single-file loader relies on (as the real models do): SD1 UNets use 8 attention
heads per level; SD2/SDXL UNet levels and all text encoders use 64-wide heads, and widths below
64 use 8-wide heads (diffusers' test convention).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_single_files import (  # noqa: F401  (re-exported: callers use tiny_models.<name>)
    PUBLISHED,
    _clip_to_open_clip,
    _unet_to_ldm,
    _vae_to_ldm,
    classic_text_names,
    full_size_ldm_shapes,
    save_single_file,
)

TINY_TEXT = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    layer_norm_eps=1e-5,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(32, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=32,
)
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _model_index(folder: Path, class_name: str, components: dict, **extra) -> None:
    import diffusers

    index = {
        "_class_name": class_name,
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        **extra,
    }
    index.update({name: list(entry) for name, entry in components.items()})
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def _text_encoder(seed: int, *, act: str, projection: bool = False, width: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    shape = dict(hidden_size=width, intermediate_size=width + 5, num_attention_heads=width // 64 or width // 8)
    config = CLIPTextConfig(**{**TINY_TEXT, **shape}, hidden_act=act, projection_dim=32)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(seed: int, scaling_factor: float, force_upcast: bool):
    from diffusers import AutoencoderKL

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoencoderKL(**TINY_VAE, scaling_factor=scaling_factor, force_upcast=force_upcast)


def _save(folder: Path, **modules) -> None:
    for name, module in modules.items():
        module.save_pretrained(folder / name)


def write_clip_tokenizer_files(
    folder: str | Path, *, pad_token: str = "<|endoftext|>", bpe_path: str | Path | None = None
) -> Path:
    """Write vocab.json, merges.txt and the configs of CLIP's tokenizer into `folder` (diffusers' tokenizer/ layout)."""
    from headshot.train.base_model import CLIP_MAX_LENGTH
    from headshot.train.clip_tokenizers import _clip_vocabulary, _open_clip_bpe_path

    path = Path(bpe_path) if bpe_path is not None else _open_clip_bpe_path()
    if path is None:
        raise RuntimeError("open_clip_torch is not installed; pip install open_clip_torch.")
    merges, vocab = _clip_vocabulary(str(path))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": CLIP_MAX_LENGTH, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def make_tiny_sd1(folder: str | Path) -> Path:
    """A tiny SD1.x diffusers folder: conv proj_in/proj_out, 8 heads, CLIP text encoder with quick_gelu."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    folder = Path(folder)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            use_linear_projection=False,
            norm_num_groups=32,
        )
    scheduler = PNDMScheduler(
        **SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, prediction_type="epsilon"
    )
    _save(
        folder,
        unet=unet,
        vae=_vae(2, 0.18215, False),
        text_encoder=_text_encoder(3, act="quick_gelu"),
        scheduler=scheduler,
    )
    write_clip_tokenizer_files(folder / "tokenizer")
    _model_index(
        folder,
        "StableDiffusionPipeline",
        {
            "scheduler": ("diffusers", "PNDMScheduler"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
            "unet": ("diffusers", "UNet2DConditionModel"),
            "vae": ("diffusers", "AutoencoderKL"),
            "safety_checker": (None, None),
        },
        requires_safety_checker=False,
    )
    return folder


def make_tiny_sd2(folder: str | Path, *, prediction_type: str = "v_prediction") -> Path:
    """A tiny SD2.x diffusers folder (linear proj_in, 64-wide heads, OpenCLIP-style gelu text encoder).

    Its UNet is wired to *behave* like the given prediction type on pure noise at t=999, which is
    what the loader's probe measures: for "epsilon" the only path to the output is the skip from
    conv_in (copying the input latent, output = 2*SiLU(normalised input), slope ~1); for
    "v_prediction" the output conv ignores its input (a constant, slope 0). Everything else is random.
    """
    from diffusers import PNDMScheduler, UNet2DConditionModel

    folder = Path(folder)
    with torch.random.fork_rng():
        torch.manual_seed(4)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(64, 128),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(1, 2),
            use_linear_projection=True,
            upcast_attention=True,
            norm_num_groups=32,
        )
    with torch.no_grad():
        unet.conv_in.weight.zero_()
        unet.conv_in.bias.zero_()
        for c in range(4):
            unet.conv_in.weight[c, c, 1, 1] = 1.0  # latent channel c -> feature c
        last = unet.up_blocks[-1]
        resnet = last.resnets[-1]  # takes [features, skip from conv_in]
        resnet.conv2.weight.zero_()
        resnet.conv2.bias.zero_()
        shortcut = resnet.conv_shortcut.weight
        shortcut.zero_()
        resnet.conv_shortcut.bias.zero_()
        skip = unet.config.block_out_channels[0]
        for c in range(shortcut.shape[0]):
            shortcut[c, shortcut.shape[1] - skip + c, 0, 0] = 1.0  # pass the conv_in skip through
        last.attentions[-1].proj_out.weight.zero_()
        last.attentions[-1].proj_out.bias.zero_()
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
        if prediction_type == "epsilon":
            for c in range(4):
                unet.conv_out.weight[c, c, 1, 1] = 2.0
        else:
            unet.conv_out.bias.copy_(torch.tensor([-0.2, 0.1, 0.05, -0.1]))
    scheduler = PNDMScheduler(
        **SCHEDULE, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, prediction_type=prediction_type
    )
    _save(
        folder, unet=unet, vae=_vae(5, 0.18215, False), text_encoder=_text_encoder(6, act="gelu"), scheduler=scheduler
    )
    write_clip_tokenizer_files(folder / "tokenizer", pad_token="!")
    _model_index(
        folder,
        "StableDiffusionPipeline",
        {
            "scheduler": ("diffusers", "PNDMScheduler"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
            "unet": ("diffusers", "UNet2DConditionModel"),
            "vae": ("diffusers", "AutoencoderKL"),
            "safety_checker": (None, None),
        },
        requires_safety_checker=False,
    )
    return folder


def make_tiny_sdxl(folder: str | Path) -> Path:
    """A tiny SDXL diffusers folder: text_time conditioning, two text encoders (32 + 64 = context 96).

    As in the real model the two encoders differ in width (CLIP-L 768, bigG 1280): diffusers' own
    single-file loader tells them apart by width. The second one projects its pooled output to 32.
    """
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    folder = Path(folder)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(64, 128),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(1, 2),
            cross_attention_dim=96,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=32 + 6 * 8,
            norm_num_groups=32,
        )
    scheduler = EulerDiscreteScheduler(
        **SCHEDULE, steps_offset=1, timestep_spacing="leading", prediction_type="epsilon"
    )
    _save(
        folder,
        unet=unet,
        vae=_vae(8, 0.13025, True),
        text_encoder=_text_encoder(9, act="quick_gelu"),
        text_encoder_2=_text_encoder(10, act="gelu", projection=True, width=64),
        scheduler=scheduler,
    )
    write_clip_tokenizer_files(folder / "tokenizer")
    write_clip_tokenizer_files(folder / "tokenizer_2", pad_token="!")
    _model_index(
        folder,
        "StableDiffusionXLPipeline",
        {
            "scheduler": ("diffusers", "EulerDiscreteScheduler"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
            "tokenizer_2": ("transformers", "CLIPTokenizer"),
            "unet": ("diffusers", "UNet2DConditionModel"),
            "vae": ("diffusers", "AutoencoderKL"),
        },
        force_zeros_for_empty_prompt=True,
    )
    return folder
