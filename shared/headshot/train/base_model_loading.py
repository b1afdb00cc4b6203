"""Base models for LoRA training: load SD1.x, SD2.x and SDXL as diffusers modules.

Three sources are accepted, in this order of preference:

* a single-file checkpoint (``.safetensors`` or ``.ckpt``) in the original LDM/SGM layouts
  (single_file_loading: the architecture is read off the tensor shapes, configs_from_shapes);
* a diffusers folder, the one holding ``model_index.json`` (diffusers_loading);
* a Hugging Face hub id, tried only when the name is not a local path, and only when
  HF_HUB_OFFLINE is not set.

The family comes from the weights or the configs (headshot.families), never from a file name.
Tokenizers come from local sources only; see clip_tokenizers.find_clip_tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import HeadshotError
from ..families import detect_checkpoint
from ..families.checkpoint_file import read_checkpoint
from .base_model import PREDICTION_TYPES, BaseModel, Progress, training_noise_scheduler
from .diffusers_loading import load_diffusers, load_from_hub, looks_like_hub_id
from .single_file_loading import build_unet, load_single_file, probe_prediction_type


def load_base_model(
    path_or_id: str | Path,
    *,
    tokenizer_dirs: Sequence[Path] = (),
    dtype=torch.float32,
    device="cpu",
    progress: Progress | None = None,
    prediction_type: str | None = None,
    defer_unet: bool = False,
    defer_encoders: bool = False,
    vae_dtype=None,
    text_encoder_dtype=None,
    vae_file: str | Path | None = None,
) -> BaseModel:
    """Load a base model from a single-file checkpoint, a diffusers folder or (only if not a local path) a hub id.

    `tokenizer_dirs`: folders holding a CLIP tokenizer (vocab.json + merges.txt), searched before the
    Hugging Face cache and open_clip's bundled vocabulary. `prediction_type` overrides the detected one.
    `progress(message)` is told about the slow steps. With `defer_unet` the UNet is loaded on the
    first `BaseModel.ensure_unet()` (where its prediction type is already known), with `defer_encoders` the VAE,
    text encoders and tokenizers on the first `BaseModel.ensure_encoders()` (a hub id loads them at once).
    Floating weights come in `dtype`, the VAE's in `vae_dtype` and the text encoders' in `text_encoder_dtype`
    where those are given. `vae_file`: a separate VAE (LDM layout) used in place of the model's own.
    """
    say = progress or (lambda message: None)
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise HeadshotError(
            f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, not {prediction_type!r}.",
            "bad_prediction_type",
        )
    device = torch.device(device)
    tokenizer_dirs = [Path(d) for d in tokenizer_dirs]
    dtypes = {"dtype": dtype, "vae_dtype": vae_dtype or dtype, "text_encoder_dtype": text_encoder_dtype or dtype}
    separate = Path(vae_file).expanduser() if vae_file else None  # a VAE file in place of the model's own
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise HeadshotError(
                    f"{path} is a folder without model_index.json, so it is not a diffusers model folder; pass a "
                    ".safetensors/.ckpt checkpoint, or the diffusers folder that holds model_index.json, unet/, vae/ "
                    "and text_encoder/.",
                    "not_a_base_model",
                )
            base = load_diffusers(
                str(path),
                local=True,
                tokenizer_dirs=tokenizer_dirs,
                **dtypes,
                device=device,
                say=say,
                defer_unet=defer_unet,
                defer_encoders=defer_encoders,
                vae_file=separate,
            )
        else:
            base = load_single_file(
                path,
                tokenizer_dirs=tokenizer_dirs,
                **dtypes,
                device=device,
                say=say,
                prediction_type=prediction_type,
                defer_unet=defer_unet,
                defer_encoders=defer_encoders,
                vae_file=separate,
            )
    elif not isinstance(path_or_id, Path) and looks_like_hub_id(text):
        base = load_from_hub(text, tokenizer_dirs=tokenizer_dirs, **dtypes, device=device, say=say, vae_file=separate)
    else:
        raise HeadshotError(
            f"Base model {text} not found: there is no such file or folder. Pass a .safetensors/.ckpt checkpoint, "
            "a diffusers folder (with model_index.json) or a Hugging Face hub id such as "
            "stable-diffusion-v1-5/stable-diffusion-v1-5.",
            "base_model_not_found",
        )
    if prediction_type is not None and prediction_type != base.prediction_type:
        base.prediction_type = prediction_type
        base.noise_scheduler = training_noise_scheduler(prediction_type)
    for module in (base.unet, base.vae, *base.text_encoders):
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    say(f"loaded {base.family} base model ({base.prediction_type}) from {base.source}")
    return base


def detect_family(
    state_dict: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None, source: str | None = None
) -> tuple[str, str]:
    """(family, prediction_type) of a single-file LDM/SGM checkpoint, from its keys, shapes and weights.

    Never from a file name. Raises HeadshotError("not_a_base_model") for LoRAs, VAEs, embeddings and
    other files that are not a whole SD1/SD2/SDXL checkpoint. For SD2 without an explicit marker the
    UNet is built from the weights and probed once (see `probe_prediction_type`).
    """
    family, prediction = detect_checkpoint(state_dict, metadata=metadata, source=source or "this checkpoint")
    if prediction is None:
        unet = build_unet(state_dict, set(state_dict.keys()), family, dtype=torch.float32, device=torch.device("cpu"))
        prediction = probe_prediction_type(unet)
    return family.name, prediction


def checkpoint_family(path: str | Path) -> tuple[str, str]:
    """(family, prediction_type) of a single-file checkpoint on disk, read from its weights."""
    path = Path(path)
    state_dict, metadata = read_checkpoint(path)
    return detect_family(state_dict, metadata=metadata, source=path.name)
