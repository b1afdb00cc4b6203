"""What training reuses every step, computed once: image latents and text embeddings."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..devices import cpu_has_bf16_matrix_units
from ..errors import HeadshotError
from ..families import get_family
from ..photos import TooManyPixels, open_image
from ..winograd import winograd_convolutions
from .dataset import TrainingImage, caption_variants
from .lean_resnets import lean_resnets


@dataclass
class TextEmbedding:
    hidden: torch.Tensor  # [77, D] conditioning for cross-attention
    pooled: torch.Tensor | None  # [D2] SDXL's pooled text embedding


def _image_tensor(path, resolution: int) -> torch.Tensor:
    try:
        with open_image(path) as opened:
            img = opened.convert("RGB")
    except (TooManyPixels, UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise HeadshotError(
            f"{path}: the image cannot be read ({exc}); replace it or remove it from the dataset",
            "bad_dataset_image",
        ) from None
    if img.size != (resolution, resolution):
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    arr = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1.0)
    return arr.permute(2, 0, 1)


#: pixels the VAE encodes in one call on a GPU: 4 pictures at 512 px (about 2 GB of activations in fp32, 1 in fp16)
ENCODE_PIXELS = 4 * 512 * 512
#: pictures per VAE call on the CPU: a picture's convolutions are already large matrix products there, and a
#: batch's activations outgrow the processor's caches (a 2-core AVX-512 Xeon, 8 pictures at 256 px: 7.7 s one
#: by one, 10.2 s in one call; at 512 px 34.6 s against 42.3 s in fours)
CPU_PICTURES_PER_CALL = 1


def encoding_precision(
    device, weights_dtype: torch.dtype, overflows_in_fp16: bool, full_precision: bool
) -> tuple[torch.dtype, torch.dtype | None]:
    """(the encoder's dtype, an autocast dtype or None) for running a frozen encoder (the VAE, the text
    encoders) once over the training inputs.

    Half precision, as sd-scripts encodes with mixed precision on a GPU (its --mixed_precision no and
    --no_half_vae, our `full_precision`, keep fp32). A VAE that overflows in fp16 (SDXL's) runs in fp32 there;
    bf16 has fp32's range. On a CPU with AMX an fp32 encoder runs under bf16 autocast, several times faster,
    outputs within about 1 % of fp32's (the encoder itself stays fp32, for anything that uses it later).
    """
    if full_precision or (weights_dtype == torch.float16 and overflows_in_fp16):
        return torch.float32, None
    if torch.device(device).type == "cpu" and weights_dtype == torch.float32 and cpu_has_bf16_matrix_units():
        return torch.float32, torch.bfloat16
    return weights_dtype, None


def frozen_encoder_dtypes(settings, device, weights_dtype: torch.dtype) -> tuple[torch.dtype, torch.dtype]:
    """(the VAE's, the text encoders') dtype to load them in, for a run whose other weights load in `weights_dtype`.

    On a CPU with AMX, under mixed precision "auto" (fp32 training there), an encoder that does nothing but
    encode the training inputs once loads in bf16, as sd-scripts casts frozen encoders to the mixed precision:
    half the bytes to convert, and no fp32 weight re-cast to bf16 on every call as under autocast (SDXL at
    512 px on a 2-core Xeon: 8 pictures 6.4 s -> 5.1 s, 32 captions 3.4 s -> 2.7 s, 2.3 GB less while caching).
    Not where it does more: validation images and class images draw with both, a trained text encoder needs
    its weights as they are, and --no-half-vae asks for an fp32 VAE.
    """
    s = settings
    half = (
        torch.device(device).type == "cpu"
        and weights_dtype == torch.float32
        and s.mixed_precision != "no"
        and not s.validation_images
        and not (s.class_images_dir or s.class_image_count)
        and cpu_has_bf16_matrix_units()
    )
    vae = torch.bfloat16 if half and not s.no_half_vae else weights_dtype
    text = torch.bfloat16 if half and s.text_encoder_lr is None else weights_dtype
    return vae, text


@contextmanager
def _vae_in(vae, dtype):
    """The VAE in `dtype` for encoding, then back (exactly: fp32 holds every half value) for the pipelines
    that decode with it later in the weights' precision."""
    before = next(vae.parameters()).dtype
    if before != dtype:
        vae.to(dtype=dtype)
    try:
        yield
    finally:
        if before != dtype:
            vae.to(dtype=before)


def _pictures_per_call(device, resolution: int) -> int:
    if torch.device(device).type == "cpu":
        return CPU_PICTURES_PER_CALL
    return max(1, ENCODE_PIXELS // (resolution * resolution))


@torch.no_grad()
def encode_latents(
    vae,
    images: list[TrainingImage],
    resolution: int,
    flip: bool,
    device,
    dtype,
    seed: int,
    progress=None,
    autocast: torch.dtype | None = None,
):
    """Per image: latents of the image and (with flip) of its mirror, scaled for the UNet.

    The mirror is encoded, not flipped in latent space: the VAE is not mirror-symmetric. On a GPU pictures
    go through the VAE in batches (one call per batch is much faster than one per picture), on the CPU one
    at a time (`CPU_PICTURES_PER_CALL`); the noise is drawn per image in order, so the result does not
    depend on the batch size. `autocast` (see `encoding_precision`) runs the VAE's layers in that dtype; in
    fp32 on an AVX2 CPU its large convolutions go through Winograd's algorithm (`headshot.winograd`).
    """
    generator = torch.Generator().manual_seed(seed)
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    per_image = 2 if flip else 1
    per_call = _pictures_per_call(device, resolution)
    batch_images = max(1, per_call // per_image)
    # oneDNN's convolutions are about 15 % faster on channels-last tensors on the CPU (same values to 1e-5)
    on_cpu = torch.device(device).type == "cpu"
    layout = torch.channels_last if on_cpu else torch.contiguous_format
    vae.to(memory_format=layout)
    cache = []
    encoder = getattr(vae, "encoder", vae)
    with _vae_in(vae, dtype), lean_resnets(encoder), winograd_convolutions(encoder, None if on_cpu else False):
        for start in range(0, len(images), batch_images):
            items = images[start : start + batch_images]
            if progress:
                more = f" (+{len(items) - 1})" if len(items) > 1 else ""
                progress(start, len(images), f"caching latents {items[0].path.name}{more}")
            pixels = []
            for item in items:
                image = _image_tensor(item.path, resolution)
                pixels += [image, image.flip(-1)] if flip else [image]
            stacked = torch.stack(pixels).to(device, dtype).contiguous(memory_format=layout)
            with torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
                parts = [vae.encode(chunk).latent_dist for chunk in stacked.split(per_call)]
            mean, std = torch.cat([d.mean for d in parts]).to(dtype), torch.cat([d.std for d in parts]).to(dtype)
            noise = torch.cat([torch.randn((per_image, *mean.shape[1:]), generator=generator) for _ in items])
            latents = (mean + std * noise.to(device, dtype) - shift) * scale
            for i in range(len(items)):
                cache.append([x.float().contiguous() for x in latents[i * per_image : (i + 1) * per_image]])
    return cache


def encode_prompt(base, caption: str, device, with_grad: bool = False) -> TextEmbedding:
    """The UNet conditioning for one caption, the way each family's pipelines build it."""
    return encode_prompt_batch(base, [caption], device, with_grad)[0]


def encode_prompt_batch(
    base, captions: list[str], device, with_grad: bool = False, autocast: torch.dtype | None = None
) -> list[TextEmbedding]:
    """`encode_prompt` of several captions in one call per text encoder (padded to the same 77 tokens, so each
    row is what it would be alone); `autocast` as in `encoding_precision`, the results in the encoders' dtype."""
    context = torch.enable_grad() if with_grad else torch.no_grad()
    sdxl = get_family(base.family).penultimate_text_states
    pairs = list(zip(base.tokenizers, base.text_encoders)) if sdxl else [(base.tokenizers[0], base.text_encoders[0])]
    hidden_states, pooled = [], None
    with context, torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
        for tokenizer, encoder in pairs:
            ids = tokenizer(
                captions,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            dtype = next(encoder.parameters()).dtype
            if sdxl:
                out = encoder(ids, output_hidden_states=True)
                hidden_states.append(out.hidden_states[-2].to(dtype))
                pooled = out[0].to(dtype)  # the projected pooled output of the second encoder
            else:
                hidden_states.append(encoder(ids)[0].to(dtype))
    hidden = torch.cat(hidden_states, dim=-1)
    return [TextEmbedding(hidden[i], None if pooled is None else pooled[i]) for i in range(len(captions))]


#: captions per text-encoder call when caching: 77 tokens alone are too few rows for the matrix units, and each
#: call reads all the encoder's weights again (CLIP-G: 1.4 GB in bf16). On a 2-core Xeon with AMX, 29 captions
#: through SDXL's two encoders in bf16: 2.47 s in eights, 2.01 s in sixteens, 1.81 s in one call; SD1.5's CLIP-L
#: 0.36, 0.40 and 0.27 s. The activations kept (every layer's hidden states, for the penultimate) are 0.2 GB for
#: 32 captions through CLIP-G, against its 1.4 GB of weights.
CAPTIONS_PER_CALL = 32


def cache_text_embeddings(
    base,
    images: list[TrainingImage],
    variants: int,
    shuffle: bool,
    seed: int,
    device,
    autocast: torch.dtype | None = None,
):
    """Per image, the embeddings of up to `variants` caption shuffles (trigger first), each distinct text
    computed once, `CAPTIONS_PER_CALL` at a time."""
    texts_per_image = [
        caption_variants(item.caption, variants if shuffle else 1, seed + i) for i, item in enumerate(images)
    ]
    distinct = list(dict.fromkeys(text for texts in texts_per_image for text in texts))
    memo: dict[str, TextEmbedding] = {}
    for start in range(0, len(distinct), CAPTIONS_PER_CALL):
        batch = distinct[start : start + CAPTIONS_PER_CALL]
        for text, emb in zip(batch, encode_prompt_batch(base, batch, device, autocast=autocast)):
            # each its own storage: a row of the batch would keep the whole batch alive in the cache
            memo[text] = TextEmbedding(emb.hidden.clone(), None if emb.pooled is None else emb.pooled.clone())
    return [[memo[text] for text in texts] for texts in texts_per_image]
