"""Single-file checkpoints (LDM for SD1/SD2, SGM for SDXL) loaded as diffusers modules.

The weights are renamed by diffusers' own conversion functions (``diffusers.loaders.single_file_utils``:
the ones its ``from_single_file`` uses) into modules whose configs are read off the shapes
(configs_from_shapes), and loaded strictly: a missing, extra or misshapen tensor is an error that
names the component, never a silently half-initialised model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import BackendUnavailable, HeadshotError
from ..families import Family, TextEncoder, detect_checkpoint
from ..families.checkpoint_file import read_checkpoint
from .base_model import CLIP_MAX_LENGTH, TRAIN_SCHEDULE, BaseModel, Progress, training_noise_scheduler
from .clip_tokenizers import family_tokenizers
from .configs_from_shapes import clip_text_config, infer_unet_config, infer_vae_config
from .vae_files import separate_vae


def _conversion_functions():
    try:
        from diffusers.loaders import single_file_utils as sfu
    except ImportError as e:
        raise BackendUnavailable(
            f"Loading a single-file checkpoint needs diffusers ({e}); pip install 'diffusers>=0.30' transformers.",
        ) from e
    needed = (
        "convert_ldm_unet_checkpoint",
        "convert_ldm_vae_checkpoint",
        "convert_ldm_clip_checkpoint",
        "convert_open_clip_checkpoint",
    )
    missing = [name for name in needed if not hasattr(sfu, name)]
    if missing:
        raise BackendUnavailable(
            f"This diffusers version lacks {', '.join(missing)} in diffusers.loaders.single_file_utils; "
            "install a diffusers release that has them (0.28 to 0.42 do), or pass a diffusers folder."
        )
    return sfu


def _empty_init():
    try:
        from accelerate import init_empty_weights
    except ImportError:
        return contextlib.nullcontext()
    return init_empty_weights()


def _subdict(
    sd: Mapping, keys, prefix: str, skip: Callable[[str], bool] = lambda k: False, *, dtype=None, device=None
) -> dict:
    """One component's tensors, read from the file only now, floating ones already in `dtype` on `device`.

    Only this component's tensors are in memory, each converted as it is read: they become the
    module's parameters (load_state_dict(assign=True)), so loading costs the built models and no
    copy of the file.
    """
    wanted = [k for k in sorted(keys) if k.startswith(prefix) and not skip(k)]
    read = getattr(sd, "tensors", None)
    if read is not None:  # a lazily read .safetensors file
        return dict(read(wanted, dtype=dtype, device=device))
    return {k: _cast(sd[k], dtype, device) for k in wanted}


def _cast(tensor: torch.Tensor, dtype, device) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor if device is None else tensor.to(device)


def _fit_keys(weights: dict, expected) -> dict:
    """Match transformers' CLIP key spelling (with or without "text_model."); drop the position_ids buffer."""
    fitted = {}
    for key, value in weights.items():
        if key not in expected:
            alt = key[len("text_model.") :] if key.startswith("text_model.") else "text_model." + key
            if alt in expected:
                key = alt
            elif key.endswith("position_ids"):
                continue
        fitted[key] = value
    return fitted


def weight_mismatches(model, weights: dict) -> str:
    """ "" when `weights` fit `model`'s state dict exactly; else what is missing, extra or misshapen."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshapen = [
        f"{k} {tuple(weights[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    return "; ".join(
        f"{label} ({len(items)}): {', '.join(items[:4])}{' …' if len(items) > 4 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
        if items
    )


def _materialize(model, weights: dict, *, dtype, device, what: str, source: str):
    """Load `weights` into the (empty) `model` strictly, casting floating tensors to `dtype` on `device`."""
    problems = weight_mismatches(model, weights)
    if problems:
        raise HeadshotError(
            f"{source}: the {what} weights do not fit the architecture read from the checkpoint ({problems}). The "
            "file may be damaged or a variant this loader does not know; pass the model's diffusers folder instead.",
            "conversion_failed",
        )
    final = {}
    for key in list(weights):
        # a no-op for tensors read in `dtype` already; else each source tensor goes as soon as its copy exists
        final[key] = _cast(weights.pop(key), dtype, device).contiguous()
    model.load_state_dict(final, strict=True, assign=True)
    model.to(device)
    if any(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()]):
        raise HeadshotError(
            f"{source}: the {what} kept uninitialised (meta) tensors after loading.", "conversion_failed"
        )
    return model


def prepare_unet(sd: Mapping, keys: set, family: Family, source: str = "this checkpoint", *, dtype=None, device=None):
    """(empty UNet2DConditionModel, its weights renamed to diffusers' keys, in `dtype` on `device`)."""
    from diffusers import UNet2DConditionModel

    sfu = _conversion_functions()
    config = infer_unet_config(sd, keys, family, source)
    with _empty_init():
        unet = UNet2DConditionModel.from_config(config)
    weights = _subdict(sd, keys, family.checkpoint_unet_prefix, dtype=dtype, device=device)
    return unet, sfu.convert_ldm_unet_checkpoint(weights, config)


def prepare_vae(sd: Mapping, keys: set, family: Family, *, dtype=None, device=None):
    from diffusers import AutoencoderKL

    sfu = _conversion_functions()
    config = infer_vae_config(sd, keys, family)
    with _empty_init():
        vae = AutoencoderKL.from_config(config)
    weights = _subdict(sd, keys, family.checkpoint_vae_prefix, dtype=dtype, device=device)
    return vae, sfu.convert_ldm_vae_checkpoint(weights, config)


def prepare_text_encoders(
    sd: Mapping, keys: set, family: Family, *, dtype=None, device=None
) -> list[tuple[str, Any, dict]]:
    """[(description, empty text model, its weights in transformers' keys)] in the family's order."""
    import transformers

    sfu = _conversion_functions()

    def prepare(encoder: TextEncoder, what: str):
        prefix = encoder.checkpoint_prefix
        config = clip_text_config(sd, keys, encoder)
        with _empty_init():
            model = getattr(transformers, encoder.model_class)(config)
        if not encoder.openclip_layout:
            weights = sfu.convert_ldm_clip_checkpoint(_subdict(sd, keys, prefix, dtype=dtype, device=device))
            weights = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in weights.items()}
            return what, model, _fit_keys(weights, model.state_dict())
        unused = f"{prefix}transformer.resblocks.{config.num_hidden_layers}."

        def skip(k: str) -> bool:
            if k.endswith(("logit_scale", "attn_mask")):
                return True
            # SD2 reads the penultimate block's output and never the projection
            return encoder.drop_last_layer and (k.startswith(unused) or k == prefix + "text_projection")

        weights = _subdict(sd, keys, prefix, skip, dtype=dtype, device=device)
        weights = sfu.convert_open_clip_checkpoint(model, weights, prefix=prefix)
        return what, model, _fit_keys(weights, model.state_dict())

    return [
        prepare(encoder, f"text encoder{f' {i + 1}' if i else ''} ({encoder.title})")
        for i, encoder in enumerate(family.text_encoders)
    ]


def build_unet(sd: Mapping, keys: set, family: Family, *, dtype, device, source: str = "this checkpoint"):
    unet, weights = prepare_unet(sd, keys, family, source, dtype=dtype, device=device)
    return _materialize(unet, weights, dtype=dtype, device=device, what="UNet", source=source)


def build_vae(sd: Mapping, keys: set, family: Family, *, dtype, device, source: str):
    vae, weights = prepare_vae(sd, keys, family, dtype=dtype, device=device)
    return _materialize(vae, weights, dtype=dtype, device=device, what="VAE", source=source)


def _build_text_encoders(sd: Mapping, keys: set, family: Family, *, dtype, device, source: str) -> list:
    return [
        _materialize(model, weights, dtype=dtype, device=device, what=what, source=source)
        for what, model, weights in prepare_text_encoders(sd, keys, family, dtype=dtype, device=device)
    ]


@torch.no_grad()
def probe_prediction_type(unet) -> str:
    """Tell an epsilon-prediction UNet from a v-prediction one by what it does with pure noise.

    At the last training timestep (t = 999, alpha_bar ~ 0.0047 for the SD schedule) the noisy latent
    is x_t = 0.068 x0 + 0.998 eps, i.e. almost exactly the noise. A trained epsilon model must
    therefore return (nearly) its input: eps_hat = (x_t - 0.068 x0_hat) / 0.998 ~ x_t, a regression
    slope of output on input of about 1. A v model must return v = 0.068 eps - 0.998 x0; its best
    guess of x0 from noise is the data mean plus 0.068 x_t, so v_hat ~ -mean + 0.068 (1 - var) x_t:
    a slope of about 0. The two answers are a whole unit apart, so the midpoint 0.5 separates them
    with a wide margin whatever the prompt (here: zero conditioning) and the model's fine-tuning.
    This is a first-principles test of the behaviour the prediction type defines, not a statistic
    fitted to a few released files, and it costs one UNet call on a 16x16 latent.
    """
    param = next(unet.parameters())
    config = unet.config
    size = max(16, 2 ** len(config.block_out_channels))
    generator = torch.Generator("cpu").manual_seed(0)
    noise = torch.randn((1, config.out_channels, size, size), generator=generator)
    sample = torch.zeros((1, config.in_channels, size, size))
    sample[:, : config.out_channels] = noise
    context = torch.zeros((1, CLIP_MAX_LENGTH, config.cross_attention_dim))
    added = None
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        pixels = size * 8
        added = {
            "text_embeds": torch.zeros((1, pooled)),
            "time_ids": torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]], dtype=torch.float32),
        }

    def run(dtype):
        moved = None if added is None else {k: v.to(param.device, dtype) for k, v in added.items()}
        out = unet(
            sample.to(param.device, dtype),
            torch.tensor([TRAIN_SCHEDULE["num_train_timesteps"] - 1], device=param.device),
            encoder_hidden_states=context.to(param.device, dtype),
            added_cond_kwargs=moved,
        ).sample
        return out.float().cpu()

    try:
        out = run(param.dtype)
    except RuntimeError:
        out = None
    if out is None or not torch.isfinite(out).all():
        original = param.dtype
        unet.float()  # half -> float -> half is exact
        try:
            out = run(torch.float32)
        finally:
            unet.to(original)
    slope = float((out * noise).sum() / (noise * noise).sum())
    return "epsilon" if slope > 0.5 else "v_prediction"


def load_single_file(
    path: Path,
    *,
    tokenizer_dirs,
    dtype,
    device,
    say: Progress,
    prediction_type: str | None,
    defer_unet: bool = False,
    defer_encoders: bool = False,
    vae_dtype=None,
    text_encoder_dtype=None,
    vae_file: Path | None = None,
) -> BaseModel:
    say(f"reading {path.name}")
    sd, metadata = read_checkpoint(path)
    keys = set(sd.keys())
    source = str(path)
    family, prediction = detect_checkpoint(sd, metadata=metadata, source=source, needs_vae=vae_file is None)
    # the VAE from its own file where one is given (the checkpoint's, if it has one, is never read)
    if vae_file:
        vae_config, load_vae = separate_vae(vae_file, family, dtype=vae_dtype or dtype, device=device)
    else:
        vae_config = infer_vae_config(sd, keys, family)

        def load_vae():
            return build_vae(sd, keys, family, dtype=vae_dtype or dtype, device=device, source=source)

    def load_encoders():
        tokenizers = family_tokenizers(family, tokenizer_dirs)
        say(f"converting the {family.name} text encoder{'s' if len(family.text_encoders) > 1 else ''}")
        text_encoders = _build_text_encoders(
            sd, keys, family, dtype=text_encoder_dtype or dtype, device=device, source=source
        )
        say("converting the VAE")
        vae = load_vae()
        return vae, text_encoders, tokenizers

    def load_unet():
        say(f"converting the {family.name} UNet")
        return build_unet(sd, keys, family, dtype=dtype, device=device, source=source)

    vae, text_encoders, tokenizers = (None, [], []) if defer_encoders else load_encoders()
    prediction = prediction or prediction_type
    unet = None if defer_unet and prediction is not None else load_unet()
    if prediction is None:
        if prediction_type is not None:
            prediction = prediction_type
        else:
            say(f"probing whether the {family.title} UNet predicts noise (epsilon) or velocity (v)")
            prediction = probe_prediction_type(unet)
    return BaseModel(
        family=family.name,
        prediction_type=prediction,
        unet=unet,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        noise_scheduler=training_noise_scheduler(prediction),
        source=source,
        unet_loader=None if unet is not None else load_unet,
        encoders_loader=load_encoders if defer_encoders else None,
        vae_config=vae_config,
    )
