"""The single-file layouts of the test suite's models (a helper module, not a test file).

`save_single_file` writes a tiny diffusers folder (tests/tiny_models.py) as one original
single-file checkpoint: LDM for SD1/SD2 (model.diffusion_model.*, first_stage_model.*,
cond_stage_model.*) and SGM for SDXL (conditioner.embedders.*). The diffusers -> LDM/SGM renaming
below is written for these tests. `full_size_ldm_shapes` gives the key set and shapes of the
released SD1.5 / SD2.1 / SDXL base checkpoints as meta tensors, from their published configs
(`PUBLISHED`) and the same renaming. tiny_models re-exports these names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# ---------------------------------------------------------------------------------------------
# diffusers -> LDM / SGM single files
# ---------------------------------------------------------------------------------------------

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _unet_to_ldm(weights: dict, config: dict) -> dict:
    """diffusers UNet2DConditionModel keys -> LDM/SGM openaimodel keys (without the model prefix)."""
    per = config["layers_per_block"] + 1  # ResBlocks per level, plus the down/upsampler slot
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    out = {}
    for key, value in weights.items():
        parts = key.split(".")
        head, param = ".".join(parts[:-1]), parts[-1]
        if head in fixed:
            out[f"{fixed[head]}.{param}"] = value
            continue
        if parts[0] in ("down_blocks", "up_blocks"):
            b, kind = int(parts[1]), parts[2]
            if kind in ("downsamplers", "upsamplers"):  # <blk>.<b>.<kind>.0.conv.<param>
                if kind == "downsamplers":
                    new = f"input_blocks.{(b + 1) * per}.0.op"
                else:
                    new = f"output_blocks.{b * per + per - 1}.{2 if up_has_attention[b] else 1}.conv"
                out[f"{new}.{param}"] = value
                continue
            j, rest = int(parts[3]), parts[4:]
            index = 1 + b * per + j if parts[0] == "down_blocks" else b * per + j
            block = "input_blocks" if parts[0] == "down_blocks" else "output_blocks"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), parts[3:]
            block, index = "middle_block", None
        else:
            raise KeyError(f"unexpected UNet key {key}")
        if kind == "resnets":
            rest = [_RESNET.get(rest[0], rest[0]), *rest[1:]]
            slot = 0 if index is not None else (0 if j == 0 else 2)
        elif kind == "attentions":
            slot = 1
        else:
            raise KeyError(f"unexpected UNet key {key}")
        where = f"{block}.{index}.{slot}" if index is not None else f"{block}.{slot}"
        out[f"{where}.{'.'.join(rest)}"] = value
    return out


def _vae_to_ldm(weights: dict, config: dict) -> dict:
    """diffusers AutoencoderKL keys -> LDM AutoencoderKL keys (without first_stage_model.)."""
    levels = len(config["block_out_channels"])
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    out = {}
    for key, value in weights.items():
        parts = key.split(".")
        if parts[0] in ("quant_conv", "post_quant_conv"):
            out[key] = value
            continue
        side, rest = parts[0], parts[1:]
        if rest[0] in ("conv_in", "conv_out"):
            new = rest
        elif rest[0] == "conv_norm_out":
            new = ["norm_out", *rest[1:]]
        elif rest[0] in ("down_blocks", "up_blocks"):
            i = int(rest[1])
            level = i if rest[0] == "down_blocks" else levels - 1 - i
            group = "down" if rest[0] == "down_blocks" else "up"
            if rest[2] == "resnets":
                name = "nin_shortcut" if rest[4] == "conv_shortcut" else rest[4]
                new = [group, str(level), "block", rest[3], name, *rest[5:]]
            else:  # downsamplers.0.conv / upsamplers.0.conv
                new = [group, str(level), "downsample" if group == "down" else "upsample", *rest[4:]]
        elif rest[0] == "mid_block":
            if rest[1] == "resnets":
                new = ["mid", f"block_{int(rest[2]) + 1}", *rest[3:]]
            else:  # attentions.0.<name>[.0].<param>; LDM stores 1x1 convolutions
                name = attention[rest[3]]
                new = ["mid", "attn_1", name, rest[-1]]
                if rest[-1] == "weight" and value.dim() == 2:
                    value = value[:, :, None, None]
        else:
            raise KeyError(f"unexpected VAE key {key}")
        out[".".join([side, *new])] = value
    return out


def _text_state(folder: Path) -> dict:
    """A text encoder's weights with transformers' classic names (text_model.* plus text_projection)."""
    weights = load_file(str(folder / "model.safetensors"))
    out = {}
    for key, value in weights.items():
        if not key.startswith("text_model.") and key not in ("text_projection.weight", "logit_scale"):
            key = "text_model." + key
        out[key] = value
    return out


def _random_like(shape, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if like.is_meta:
        return torch.empty(shape, device="meta")
    return torch.randn(shape, generator=generator) * 0.02


def _clip_to_open_clip(weights: dict, *, extra_block: bool, generator: torch.Generator) -> dict:
    """transformers CLIP text keys -> open_clip's (token_embedding, transformer.resblocks.N.attn.in_proj_*, ...)."""
    out = {}
    layers = sorted({int(k.split(".")[3]) for k in weights if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        p = f"text_model.encoder.layers.{i}."
        q = f"transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            out[q + f"attn.in_proj_{param}"] = torch.cat(
                [weights[p + f"self_attn.{n}_proj.{param}"] for n in ("q", "k", "v")], dim=0
            )
            out[q + f"attn.out_proj.{param}"] = weights[p + f"self_attn.out_proj.{param}"]
            out[q + f"ln_1.{param}"] = weights[p + f"layer_norm1.{param}"]
            out[q + f"ln_2.{param}"] = weights[p + f"layer_norm2.{param}"]
            out[q + f"mlp.c_fc.{param}"] = weights[p + f"mlp.fc1.{param}"]
            out[q + f"mlp.c_proj.{param}"] = weights[p + f"mlp.fc2.{param}"]
    out["token_embedding.weight"] = weights["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = weights["text_model.embeddings.position_embedding.weight"]
    out["ln_final.weight"] = weights["text_model.final_layer_norm.weight"]
    out["ln_final.bias"] = weights["text_model.final_layer_norm.bias"]
    width = out["token_embedding.weight"].shape[1]
    if "text_projection.weight" in weights:
        out["text_projection"] = weights["text_projection.weight"].T.contiguous()  # open_clip: x @ text_projection
    if extra_block:
        # SD2 checkpoints hold the whole OpenCLIP tower, but SD2 reads the penultimate block's output:
        # the last block (and the projection) are in the file and unused
        last = layers[-1] + 1
        for key in [k for k in out if k.startswith(f"transformer.resblocks.{layers[-1]}.")]:
            new = key.replace(f"resblocks.{layers[-1]}.", f"resblocks.{last}.")
            out[new] = _random_like(out[key].shape, out[key], generator)
        out["text_projection"] = _random_like((width, width), out["token_embedding.weight"], generator)
    out["logit_scale"] = torch.tensor(4.6052, device=out["token_embedding.weight"].device)
    return out


def save_single_file(diffusers_folder: str | Path, out_path: str | Path, family: str) -> Path:
    """Write a tiny diffusers folder's weights as one LDM (sd1/sd2) or SGM (sdxl) .safetensors file."""
    folder, out_path = Path(diffusers_folder), Path(out_path)
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    unet = _unet_to_ldm(load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")), unet_config)
    vae = _vae_to_ldm(load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors")), vae_config)
    tensors = {"model.diffusion_model." + k: v for k, v in unet.items()}
    tensors.update({"first_stage_model." + k: v for k, v in vae.items()})
    generator = torch.Generator().manual_seed(11)
    text = _text_state(folder / "text_encoder")
    if family == "sd1":
        tensors.update({"cond_stage_model.transformer." + k: v for k, v in text.items()})
        tensors["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    elif family == "sd2":
        clip = _clip_to_open_clip(text, extra_block=True, generator=generator)
        tensors.update({"cond_stage_model.model." + k: v for k, v in clip.items()})
    elif family == "sdxl":
        tensors.update({"conditioner.embedders.0.transformer." + k: v for k, v in text.items()})
        clip = _clip_to_open_clip(_text_state(folder / "text_encoder_2"), extra_block=False, generator=generator)
        tensors.update({"conditioner.embedders.1.model." + k: v for k, v in clip.items()})
    else:
        raise ValueError(f"family must be sd1, sd2 or sdxl, not {family!r}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_path))
    return out_path


VAE_PREFIX = "first_stage_model."


def save_without_vae(checkpoint: Path, bare: Path, vae: Path | None = None, *, vae_scale: float = 1.0) -> Path:
    """`checkpoint` saved again without its VAE as `bare` (as many merged checkpoints are), and that VAE alone in the
    LDM layout (bare keys, A1111's models/VAE files) as `vae` when given, its weights times `vae_scale` (another VAE
    than the checkpoint's, told apart by its numbers)."""
    tensors = load_file(str(checkpoint))
    save_file({k: v for k, v in tensors.items() if not k.startswith(VAE_PREFIX)}, str(bare))
    if vae is not None:
        own = {k[len(VAE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(VAE_PREFIX)}
        save_file({k: v * vae_scale if v.is_floating_point() else v for k, v in own.items()}, str(vae))
    return bare


# ---------------------------------------------------------------------------------------------
# full-size key sets (shapes only)
# ---------------------------------------------------------------------------------------------

_CLIP_L = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu"
)
_VAE_FULL = dict(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
_SD_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)

# the released base models' diffusers configs (stable-diffusion-v1-5, stable-diffusion-2-1,
# stable-diffusion-xl-base-1.0: unet/, vae/, text_encoder*/config.json), the fields that shape them
PUBLISHED = {
    "sd1": {
        "unet": dict(_SD_UNET, cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False),
        "text": [_CLIP_L],
        "vae": _VAE_FULL,
    },
    "sd2": {
        "unet": dict(
            _SD_UNET,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
            upcast_attention=True,
        ),
        "text": [
            dict(
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=23,
                num_attention_heads=16,
                hidden_act="gelu",
            )
        ],
        "vae": _VAE_FULL,
    },
    "sdxl": {
        "unet": dict(
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ),
        "text": [
            _CLIP_L,
            dict(
                hidden_size=1280,
                intermediate_size=5120,
                num_hidden_layers=32,
                num_attention_heads=20,
                hidden_act="gelu",
                projection_dim=1280,
            ),
        ],
        "vae": _VAE_FULL,
    },
}


def classic_text_names(weights: dict) -> dict:
    """A transformers CLIP text state dict with the classic names released checkpoints use (text_model.*)."""
    return {
        k if k.startswith("text_model.") or k == "text_projection.weight" else "text_model." + k: v
        for k, v in weights.items()
    }


def full_size_ldm_shapes(family: str) -> dict:
    """The key set and shapes of a released SD1.5 / SD2.1 / SDXL base checkpoint, as meta tensors (no memory).

    Built from the published diffusers configs (`PUBLISHED`) and renamed to LDM/SGM keys with the
    same mapping as `save_single_file`, so loader code can be checked against real architectures.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    published = PUBLISHED[family]
    text_base = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**published["unet"])
        vae = AutoencoderKL(**published["vae"])
        texts = []
        for config in published["text"]:
            cls = CLIPTextModelWithProjection if "projection_dim" in config else CLIPTextModel
            texts.append(cls(CLIPTextConfig(**text_base, **config)).state_dict())
    tensors = {"model.diffusion_model." + k: v for k, v in _unet_to_ldm(unet.state_dict(), unet.config).items()}
    tensors.update({"first_stage_model." + k: v for k, v in _vae_to_ldm(vae.state_dict(), vae.config).items()})

    generator = torch.Generator().manual_seed(0)
    if family in ("sd1", "sd2"):  # LDM checkpoints also carry the diffusion schedule and EMA counters
        for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "posterior_variance"):
            tensors[name] = torch.empty(1000, device="meta")
        tensors["model_ema.decay"] = torch.empty((), device="meta")
        tensors["model_ema.num_updates"] = torch.empty((), dtype=torch.int32, device="meta")
    if family == "sd1":
        tensors.update({"cond_stage_model.transformer." + k: v for k, v in classic_text_names(texts[0]).items()})
        tensors["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.empty(
            (1, 77), dtype=torch.int64, device="meta"
        )
    elif family == "sd2":
        clip = _clip_to_open_clip(classic_text_names(texts[0]), extra_block=True, generator=generator)
        tensors.update({"cond_stage_model.model." + k: v for k, v in clip.items()})
    else:
        tensors.update({"conditioner.embedders.0.transformer." + k: v for k, v in classic_text_names(texts[0]).items()})
        clip = _clip_to_open_clip(classic_text_names(texts[1]), extra_block=False, generator=generator)
        tensors.update({"conditioner.embedders.1.model." + k: v for k, v in clip.items()})
    return tensors
