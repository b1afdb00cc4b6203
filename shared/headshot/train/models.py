"""Base models for LoRA training: load SD1.x, SD2.x and SDXL as diffusers modules.

Three sources are accepted, in this order of preference:

* a single-file checkpoint (``.safetensors`` or ``.ckpt``) in the original layouts: LDM for SD1/SD2
  (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*``) and Stability's SGM
  for SDXL (``conditioner.embedders.{0,1}.*``);
* a diffusers folder (the one holding ``model_index.json``);
* a Hugging Face hub id, tried only when the name is not a local path.

Single files carry no configuration, so the architecture of every component is read off the tensor
shapes (channels, levels, blocks per level, transformer depth, context width, text-encoder width,
layers and vocabulary). The weights are then renamed by diffusers' own conversion functions
(``diffusers.loaders.single_file_utils``: the ones its ``from_single_file`` uses) and loaded strictly:
a missing, extra or misshapen tensor is an error that names the component, never a silently
half-initialised model. Nothing here downloads anything unless it is given a hub id, and then only
when HF_HUB_OFFLINE is not set.

Tokenizers come from local sources only; see `find_clip_tokenizer`.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.util
import json
import os
import pickle
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BackendUnavailable, HeadshotError

FAMILIES = ("sd1", "sd2", "sdxl")
PREDICTION_TYPES = ("epsilon", "v_prediction")
CLIP_MAX_LENGTH = 77  # every SD text encoder has 77 positions
OPENAI_CLIP_REPO = "openai/clip-vit-large-patch14"

# the training schedule shared by SD1, SD2 and SDXL (LDM/SGM configs: linear_start 0.00085,
# linear_end 0.012, 1000 timesteps, "scaled_linear" in diffusers' words)
TRAIN_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear"}

# VAE latent scaling per family (LDM configs: scale_factor 0.18215; SGM's SDXL: 0.13025)
_VAE_SCALING = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}
_DEFAULT_IMAGE_SIZE = {"sd1": 512, "sd2": 768, "sdxl": 1024}

# single-file key prefixes
_UNET = "model.diffusion_model."
_VAE = "first_stage_model."
_SD1_CLIP = "cond_stage_model.transformer."      # SD1: OpenAI CLIP ViT-L/14 in transformers' layout
_SD2_OPENCLIP = "cond_stage_model.model."        # SD2: OpenCLIP ViT-H/14 in open_clip's layout
_SGM_CLIP_L = "conditioner.embedders.0.transformer."  # SDXL te1: CLIP ViT-L/14
_SGM_BIGG = "conditioner.embedders.1.model."     # SDXL te2: OpenCLIP ViT-bigG/14
_SGM_REFINER = "conditioner.embedders.0.model."  # the SDXL refiner has only the bigG encoder

Progress = Callable[[str], None]


@dataclass
class BaseModel:
    """A base model ready for LoRA training: diffusers/transformers modules, frozen and in eval mode."""

    family: str            # "sd1" | "sd2" | "sdxl"
    prediction_type: str   # "epsilon" | "v_prediction"
    unet: Any              # diffusers UNet2DConditionModel
    vae: Any               # diffusers AutoencoderKL
    text_encoders: list    # sd1/sd2: [CLIPTextModel]; sdxl: [CLIPTextModel, CLIPTextModelWithProjection]
    tokenizers: list       # a CLIPTokenizer per text encoder, model_max_length 77
    noise_scheduler: Any   # DDPMScheduler with the training schedule and prediction_type
    source: str            # what was loaded: a path or a hub id
    unet_loader: Any = None  # with defer_unet: builds the UNet on first ensure_unet()

    def ensure_unet(self):
        """The UNet, loading it now if it was deferred (so latents and text can be cached first
        and the VAE and text encoders freed before the largest module arrives)."""
        if self.unet is None:
            self.unet = self.unet_loader()
            self.unet.requires_grad_(False)
            self.unet.eval()
            self.unet_loader = None
        return self.unet


# =============================================================================================
# public entry points
# =============================================================================================

def load_base_model(path_or_id: str | Path, *, tokenizer_dirs: Sequence[Path] = (), dtype=torch.float32,
                    device="cpu", progress: Progress | None = None,
                    prediction_type: str | None = None, defer_unet: bool = False) -> BaseModel:
    """Load a base model from a single-file checkpoint, a diffusers folder or (only if not a local path) a hub id.

    `tokenizer_dirs`: folders holding a CLIP tokenizer (vocab.json + merges.txt), searched before the
    Hugging Face cache and open_clip's bundled vocabulary. `prediction_type` overrides the detected one.
    `progress(message)` is told about the slow steps. With `defer_unet` the UNet is loaded on the
    first `BaseModel.ensure_unet()` (where its prediction type is already known).
    """
    say = progress or (lambda message: None)
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise HeadshotError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, not {prediction_type!r}.",
                            "bad_prediction_type")
    device = torch.device(device)
    tokenizer_dirs = [Path(d) for d in tokenizer_dirs]
    text = str(path_or_id)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise HeadshotError(
                    f"{path} is a folder without model_index.json, so it is not a diffusers model folder; pass a "
                    ".safetensors/.ckpt checkpoint, or the diffusers folder that holds model_index.json, unet/, vae/ "
                    "and text_encoder/.", "not_a_base_model")
            base = _load_diffusers(str(path), local=True, tokenizer_dirs=tokenizer_dirs, dtype=dtype, device=device,
                                   say=say, defer_unet=defer_unet)
        else:
            base = _load_single_file(path, tokenizer_dirs=tokenizer_dirs, dtype=dtype, device=device, say=say,
                                     prediction_type=prediction_type, defer_unet=defer_unet)
    elif not isinstance(path_or_id, Path) and _looks_like_hub_id(text):
        base = _load_from_hub(text, tokenizer_dirs=tokenizer_dirs, dtype=dtype, device=device, say=say)
    else:
        raise HeadshotError(
            f"Base model {text} not found: there is no such file or folder. Pass a .safetensors/.ckpt checkpoint, "
            "a diffusers folder (with model_index.json) or a Hugging Face hub id such as "
            "stable-diffusion-v1-5/stable-diffusion-v1-5.", "base_model_not_found")
    if prediction_type is not None and prediction_type != base.prediction_type:
        base.prediction_type = prediction_type
        base.noise_scheduler = training_noise_scheduler(prediction_type)
    for module in (base.unet, base.vae, *base.text_encoders):
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    say(f"loaded {base.family} base model ({base.prediction_type}) from {base.source}")
    return base


def detect_family(state_dict: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None,
                  source: str | None = None) -> tuple[str, str]:
    """(family, prediction_type) of a single-file LDM/SGM checkpoint, from its keys, shapes and weights.

    Never from a file name. Raises HeadshotError("not_a_base_model") for LoRAs, VAEs, embeddings and
    other files that are not a whole SD1/SD2/SDXL checkpoint. For SD2 without an explicit marker the
    UNet is built from the weights and probed once (see `_probe_prediction_type`).
    """
    keys = set(state_dict.keys())
    family, prediction = _detect(state_dict, keys, dict(metadata or {}), source or "this checkpoint")
    if prediction is None:
        unet = _build_unet(state_dict, keys, family, dtype=torch.float32, device=torch.device("cpu"))
        prediction = _probe_prediction_type(unet)
    return family, prediction


def checkpoint_family(path: str | Path) -> tuple[str, str]:
    """(family, prediction_type) of a single-file checkpoint on disk, read from its weights."""
    path = Path(path)
    state_dict, metadata = _read_checkpoint(path)
    return detect_family(state_dict, metadata=metadata, source=path.name)


def training_noise_scheduler(prediction_type: str = "epsilon"):
    """The DDPM training schedule of SD1/SD2/SDXL (scaled_linear 0.00085..0.012, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**TRAIN_SCHEDULE, prediction_type=prediction_type, clip_sample=False)


# =============================================================================================
# single-file checkpoints
# =============================================================================================

class _LazySafetensors(Mapping):
    """A .safetensors file as a read-only mapping that loads each tensor when it is asked for."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="pt", device="cpu")
        self._keys = list(self._file.keys())
        self._keyset = set(self._keys)
        self.metadata = dict(self._file.metadata() or {})

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keyset:
            raise KeyError(key)
        return self._file.get_tensor(key)

    def __contains__(self, key: object) -> bool:
        return key in self._keyset

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape_of(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())


def _shape(state_dict: Mapping, key: str) -> tuple[int, ...]:
    shape_of = getattr(state_dict, "shape_of", None)
    return shape_of(key) if shape_of else tuple(state_dict[key].shape)


def _read_checkpoint(path: Path) -> tuple[Mapping[str, torch.Tensor], dict]:
    """The tensors of a single file (lazily for safetensors) and its metadata; the format is read from the bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    header_length = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if head[8:9] == b"{" and 0 < header_length <= path.stat().st_size - 8:  # safetensors: u64 length, JSON header
        try:
            tensors = _LazySafetensors(path)
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise HeadshotError(f"{path} is a damaged .safetensors file ({e}); download or copy it again.",
                                "unreadable_checkpoint") from e
        return tensors, tensors.metadata
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch's zip format, or a legacy pickle
        return _torch_load(path), {}
    raise HeadshotError(
        f"{path} is neither a .safetensors file nor a torch .ckpt; pass a Stable Diffusion checkpoint or a "
        "diffusers folder.", "unreadable_checkpoint")


class _Inert:
    """Stands in for a non-tensor object pickled in a .ckpt (a Lightning callback, a numpy scalar…).

    It accepts and drops whatever the unpickler gives it, so no code from the file ever runs.
    """

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .ckpt, loaded with weights_only=True (unwrapping a "state_dict" key)."""

    def load(**extra):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True, **extra)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True, **extra)  # legacy format

    try:
        try:
            obj = load()
        except pickle.UnpicklingError:
            # Training checkpoints also pickle Python objects (callbacks, numpy scalars) beside the
            # weights. Those names are replaced by an inert stand-in and the load stays weights_only.
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            stubs = [(type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in names]
            with torch.serialization.safe_globals(stubs):
                obj = load()
    except Exception as e:
        raise HeadshotError(
            f"{path} could not be read as a torch checkpoint with weights_only=True ({e}). Convert it to "
            ".safetensors, or pass the model's diffusers folder instead.", "unreadable_checkpoint") from e
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise HeadshotError(f"{path} holds a {type(obj).__name__}, not a dictionary of weights; pass a Stable "
                            "Diffusion checkpoint.", "not_a_base_model")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _indices(keys, prefix: str) -> list[int]:
    """The distinct integers that follow `prefix` in `keys` ("...blocks." -> [0, 1, 2])."""
    found = set()
    for key in keys:
        if key.startswith(prefix):
            head = key[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _clip_prefix(keys, prefix: str) -> str | None:
    """The prefix of a transformers-layout CLIP text model under `prefix` (with or without "text_model.")."""
    for p in (prefix + "text_model.", prefix):
        if p + "embeddings.token_embedding.weight" in keys:
            return p
    return None


def _detect(state_dict: Mapping, keys: set, metadata: dict, source: str) -> tuple[str, str | None]:
    """(family, prediction_type or None when only the SD2 probe can tell)."""
    if _UNET + "input_blocks.0.0.weight" not in keys or _UNET + "out.2.weight" not in keys:
        what, fix = _describe_non_base(keys)
        raise HeadshotError(f"{source} is not a Stable Diffusion base model: this is {what}; {fix}",
                            "not_a_base_model")
    unet_label = _UNET + "label_emb.0.0.weight" in keys
    if _SGM_REFINER + "token_embedding.weight" in keys and _SGM_BIGG + "token_embedding.weight" not in keys:
        raise HeadshotError(
            f"{source} is an SDXL refiner (only the OpenCLIP bigG text encoder, conditioner.embedders.0.model.*); "
            "identity LoRAs are trained on the SDXL base model: pass an SDXL base checkpoint.",
            "unsupported_base_model")
    if _clip_prefix(keys, _SGM_CLIP_L) and _SGM_BIGG + "token_embedding.weight" in keys:
        if not unet_label:
            raise HeadshotError(
                f"{source} has SDXL's two text encoders but its UNet lacks label_emb (SDXL's size and crop "
                "conditioning), so it is no SDXL base model that can be loaded; pass an SDXL base checkpoint.",
                "unsupported_base_model")
        family = "sdxl"
        width = _shape(state_dict, _clip_prefix(keys, _SGM_CLIP_L) + "embeddings.token_embedding.weight")[1]
        width += _shape(state_dict, _SGM_BIGG + "token_embedding.weight")[1]
    elif _SD2_OPENCLIP + "token_embedding.weight" in keys:
        family = "sd2"
        width = _shape(state_dict, _SD2_OPENCLIP + "token_embedding.weight")[1]
    elif _clip_prefix(keys, _SD1_CLIP):
        family = "sd1"
        width = _shape(state_dict, _clip_prefix(keys, _SD1_CLIP) + "embeddings.token_embedding.weight")[1]
    else:
        raise HeadshotError(
            f"{source} is not a whole base model: it holds a UNet (model.diffusion_model.*) but no text encoder "
            "(cond_stage_model.* or conditioner.embedders.*); pass the full checkpoint or a diffusers folder.",
            "not_a_base_model")
    if family != "sdxl" and unet_label:
        raise HeadshotError(
            f"{source} is an {family.upper()} variant with class-conditioned UNet (label_emb: unCLIP or an upscaler); "
            "identity LoRAs are trained on a plain text-to-image base model.", "unsupported_base_model")
    if not any(k.startswith(_VAE) for k in keys):
        raise HeadshotError(
            f"{source} has no VAE (first_stage_model.* keys); pass a checkpoint that includes its VAE, or the "
            "model's diffusers folder.", "not_a_base_model")
    in_channels = _shape(state_dict, _UNET + "input_blocks.0.0.weight")[1]
    if in_channels != 4:
        raise HeadshotError(
            f"{source} is an inpainting or otherwise conditioned {family.upper()} model (its UNet takes "
            f"{in_channels} input channels, not 4); train on the plain text-to-image base model.",
            "unsupported_base_model")
    context = _context_width(state_dict, keys)
    if context != width:
        raise HeadshotError(
            f"{source}: the UNet's cross-attention expects {context}-wide text features but the text encoder(s) "
            f"give {width}; the checkpoint mixes parts of different models and cannot be trained on.",
            "not_a_base_model")
    return family, _explicit_prediction_type(keys, metadata, family)


def _context_width(state_dict: Mapping, keys) -> int:
    for key in sorted(keys):
        if key.startswith(_UNET) and key.endswith("attn2.to_k.weight"):
            return _shape(state_dict, key)[1]
    raise HeadshotError("the UNet has no cross-attention (attn2) layers, so it is no text-to-image model.",
                        "not_a_base_model")


def _explicit_prediction_type(keys, metadata: dict, family: str) -> str | None:
    # 1. Stability's ModelSpec metadata ("modelspec.prediction_type": "epsilon" | "v")
    declared = str(metadata.get("modelspec.prediction_type", "")).strip().lower()
    if declared in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if declared in ("epsilon", "eps"):
        return "epsilon"
    # 2. the marker tensor that v-prediction fine-tunes put in the checkpoint (an empty "v_pred" key)
    if "v_pred" in keys:
        return "v_prediction"
    # 3. SD1 and SDXL were released as epsilon models; SD2 came in both kinds (2.x-base: epsilon,
    #    2.x 768: v), so only the weights can tell.
    return None if family == "sd2" else "epsilon"


def _describe_non_base(keys: set) -> tuple[str, str]:
    """What a file that is no base model looks like, and what to do with it."""
    sample = sorted(keys)[:3]
    if not keys:
        return "an empty file (no tensors)", "pass a Stable Diffusion checkpoint."
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        return ("a LoRA (lora_unet_…/lora_te… keys)",
                "pass it with --lora, not --base-model, and give the checkpoint it was trained on as --base-model.")
    if any(s in k for k in keys for s in (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down.")):
        return ("a LoRA (lora_down/lora_up or lora_A/lora_B keys)",
                "pass it with --lora, not --base-model, and give the checkpoint it was trained on as --base-model.")
    if any(s in k for k in keys for s in ("hada_w1", "lokr_w1", ".oft_")):
        return "a LyCORIS adapter (LoHa/LoKr/OFT keys)", "pass it as a LoRA, not as --base-model."
    if keys & {"emb_params", "string_to_param", "clip_l", "clip_g", "string_to_token"}:
        return ("a textual-inversion embedding",
                "use it as an embedding in your prompts; --base-model needs a full checkpoint.")
    if any(k.startswith(("control_model.", "controlnet_cond_embedding.", "input_hint_block.")) for k in keys):
        return "a ControlNet", "ControlNets are used at generation time; pass a full checkpoint as --base-model."
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys):
        return "a Flux model", "only SD 1.x, SD 2.x and SDXL base models can be trained here."
    if any("joint_blocks." in k for k in keys):
        return "a Stable Diffusion 3 (MMDiT) model", "only SD 1.x, SD 2.x and SDXL base models can be trained here."
    vae_prefixes = ("", _VAE, "vae.")
    for p in vae_prefixes:
        if p + "encoder.conv_in.weight" in keys and p + "decoder.conv_in.weight" in keys:
            return ("a VAE alone (encoder.*/decoder.* keys)",
                    "a base model needs the UNet and text encoder too: pass the full checkpoint (it has its own VAE) "
                    "or a diffusers folder.")
    if "conv_in.weight" in keys and any(k.startswith("down_blocks.") for k in keys):
        return ("one diffusers component's weights (down_blocks.* keys)",
                "pass the whole diffusers folder (the one with model_index.json), not a single component file.")
    if any(k.startswith(("text_model.", "transformer.resblocks.", "encoder.layers.")) for k in keys):
        return "a text encoder alone", "pass the full checkpoint or a diffusers folder as --base-model."
    return (f"not a Stable Diffusion checkpoint (no model.diffusion_model.* keys; first keys: {', '.join(sample)})",
            "pass an SD 1.x, SD 2.x or SDXL checkpoint, or a diffusers folder.")


# ---------------------------------------------------------------------------------------------
# architecture read off the shapes
# ---------------------------------------------------------------------------------------------

def _heads_for_width(width: int) -> int:
    """Attention heads for a width whose head count is not stored in the weights.

    Every released SD2/SDXL UNet level and every CLIP/OpenCLIP text tower uses 64-wide heads
    (CLIP-L 768/12, OpenCLIP-H 1024/16, bigG 1280/20; SD2/SDXL: num_head_channels 64). Widths
    that are no multiple of 64 only occur in test models, which by diffusers' own test convention
    use 8-wide heads.
    """
    return width // 64 if width % 64 == 0 else max(1, width // 8)


def _arch_error(source: str, what: str) -> HeadshotError:
    return HeadshotError(
        f"{source}: {what}. This layout is not one of SD1/SD2/SDXL's, so it cannot be converted; pass the model's "
        "diffusers folder instead.", "unsupported_base_model")


def _infer_unet_config(sd: Mapping, keys: set, family: str, source: str = "this checkpoint") -> dict:
    """A diffusers UNet2DConditionModel config for the LDM/SGM UNet in `sd`."""

    def has(k):
        return _UNET + k in keys

    def shape(k):
        return _shape(sd, _UNET + k)

    def depth(block: str) -> int:
        return len(_indices(keys, f"{_UNET}{block}.1.transformer_blocks."))

    first_channels, in_channels = shape("input_blocks.0.0.weight")[:2]
    levels: list[list[tuple[int, int]]] = [[]]  # per level: (channels, transformer depth) per resnet
    for i in _indices(keys, _UNET + "input_blocks.")[1:]:
        if has(f"input_blocks.{i}.0.op.weight"):
            levels.append([])
            continue
        if not has(f"input_blocks.{i}.0.out_layers.3.weight"):
            raise _arch_error(source, f"input block {i} is neither a ResBlock nor a downsampler")
        levels[-1].append((shape(f"input_blocks.{i}.0.out_layers.3.weight")[0], depth(f"input_blocks.{i}")))
    counts = {len(level) for level in levels}
    if len(counts) != 1 or 0 in counts:
        raise _arch_error(source, f"the UNet levels have different numbers of ResBlocks ({sorted(counts)})")
    layers = counts.pop()
    channels, depths = [], []
    for level in levels:
        if len({c for c, _ in level}) != 1 or len({d for _, d in level}) != 1:
            raise _arch_error(source, "a UNet level mixes widths or transformer depths")
        channels.append(level[0][0])
        depths.append(level[0][1])
    if channels[0] != first_channels:
        raise _arch_error(source, "conv_in's width differs from the first level's")
    n = len(channels)
    outputs = _indices(keys, _UNET + "output_blocks.")
    if len(outputs) != n * (layers + 1):
        raise _arch_error(source, f"{len(outputs)} output blocks for {n} levels of {layers} ResBlocks")
    up_depths = []
    for b in range(n):
        found = {depth(f"output_blocks.{b * (layers + 1) + j}") for j in range(layers + 1)}
        if len(found) != 1:
            raise _arch_error(source, "an up level mixes transformer depths")
        up_depths.append(found.pop())
    if up_depths != depths[::-1]:
        raise _arch_error(source, f"up transformer depths {up_depths} do not mirror the down depths {depths}")
    mid_depth = depth("middle_block")
    if not mid_depth or not has("middle_block.2.in_layers.0.weight"):
        raise _arch_error(source, "the middle block is not ResBlock-transformer-ResBlock")
    if depths[-1] and depths[-1] != mid_depth:
        raise _arch_error(source, "the middle block's transformer depth differs from the deepest level's")
    per_level = [d or 1 for d in depths]
    if not depths[-1]:
        per_level[-1] = mid_depth  # diffusers gives the middle block the last level's depth
    proj_in = next(k for k in sorted(keys) if k.startswith(_UNET) and k.endswith(".proj_in.weight"))
    # LDM v1 (SD1) configs: num_heads 8 at every level; SD2/SDXL: num_head_channels 64
    heads = [8] * n if family == "sd1" else [_heads_for_width(c) for c in channels]
    config = {
        "sample_size": _DEFAULT_IMAGE_SIZE[family] // 8,
        "in_channels": in_channels,
        "out_channels": shape("out.2.weight")[0],
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in up_depths],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "cross_attention_dim": _context_width(sd, keys),
        "attention_head_dim": heads,
        "use_linear_projection": len(_shape(sd, proj_in)) == 2,
        "transformer_layers_per_block": per_level,
        # SD2's 768-v config upcasts attention (fp16 overflow); it changes nothing in fp32
        "upcast_attention": family == "sd2",
    }
    time_width = shape("time_embed.0.weight")[0]
    if time_width != 4 * first_channels:
        config["time_embedding_dim"] = time_width
    if family == "sdxl":
        adm = shape("label_emb.0.0.weight")[1]
        pooled = _shape(sd, _SGM_BIGG + "text_projection")[1] if _SGM_BIGG + "text_projection" in keys else 0
        extra = adm - pooled  # SDXL: pooled text embedding + 6 Fourier-embedded size/crop numbers
        if pooled <= 0 or extra <= 0 or extra % 6:
            raise _arch_error(source, f"label_emb takes {adm} features, not pooled text ({pooled}) + 6 size/crop values")
        config.update(addition_embed_type="text_time", addition_time_embed_dim=extra // 6,
                      projection_class_embeddings_input_dim=adm)
    return config


def _infer_vae_config(sd: Mapping, keys: set, family: str) -> dict:
    """A diffusers AutoencoderKL config for the LDM VAE under first_stage_model."""

    def shape(k):
        return _shape(sd, _VAE + k)

    levels = _indices(keys, _VAE + "encoder.down.")
    config = {
        "in_channels": shape("encoder.conv_in.weight")[1],
        "out_channels": shape("decoder.conv_out.weight")[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": [shape(f"encoder.down.{i}.block.0.conv1.weight")[0] for i in levels],
        "layers_per_block": len(_indices(keys, _VAE + "encoder.down.0.block.")),
        "latent_channels": shape("decoder.conv_in.weight")[1],
        "sample_size": _DEFAULT_IMAGE_SIZE[family],
        "scaling_factor": _VAE_SCALING[family],
        "force_upcast": family == "sdxl",  # SDXL's VAE overflows in fp16
        "mid_block_add_attention": _VAE + "encoder.mid.attn_1.q.weight" in keys,
        "use_quant_conv": _VAE + "quant_conv.weight" in keys,
        "use_post_quant_conv": _VAE + "post_quant_conv.weight" in keys,
    }
    return config


def _clip_text_config(sd: Mapping, keys: set, prefix: str, *, openclip: bool, drop_last: bool = False):
    """A transformers CLIPTextConfig for the text tower under `prefix`.

    OpenAI CLIP (SD1, SDXL te1) is stored in transformers' layout and uses quick_gelu; OpenCLIP
    (SD2's ViT-H, SDXL's bigG) in open_clip's layout and uses gelu. SD2 conditions on the
    penultimate layer, so its text encoder ends one block early (`drop_last`), as diffusers' does.
    """
    from transformers import CLIPTextConfig

    if openclip:
        vocab, width = _shape(sd, prefix + "token_embedding.weight")
        positions = _shape(sd, prefix + "positional_embedding")[0]
        layers = len(_indices(keys, prefix + "transformer.resblocks."))
        intermediate = _shape(sd, prefix + "transformer.resblocks.0.mlp.c_fc.weight")[0]
        projection = _shape(sd, prefix + "text_projection")[1] if prefix + "text_projection" in keys else width
        act = "gelu"
    else:
        p = _clip_prefix(keys, prefix)
        vocab, width = _shape(sd, p + "embeddings.token_embedding.weight")
        positions = _shape(sd, p + "embeddings.position_embedding.weight")[0]
        layers = len(_indices(keys, p + "encoder.layers."))
        intermediate = _shape(sd, p + "encoder.layers.0.mlp.fc1.weight")[0]
        projection = width
        act = "quick_gelu"
    if drop_last:
        layers -= 1
    if layers < 1:
        raise HeadshotError(f"the text encoder under {prefix} has no layers to load.", "unsupported_base_model")
    return CLIPTextConfig(
        vocab_size=vocab, hidden_size=width, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=_heads_for_width(width), max_position_embeddings=positions, hidden_act=act,
        projection_dim=projection, layer_norm_eps=1e-5,
        # CLIP's BPE puts <|startoftext|> and <|endoftext|> last; padding is <|endoftext|> or "!"
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    )


# ---------------------------------------------------------------------------------------------
# conversion and strict loading
# ---------------------------------------------------------------------------------------------

def _conversion_functions():
    try:
        from diffusers.loaders import single_file_utils as sfu
    except ImportError as e:
        raise BackendUnavailable(
            f"Loading a single-file checkpoint needs diffusers ({e}); pip install 'diffusers>=0.30' transformers.",
        ) from e
    needed = ("convert_ldm_unet_checkpoint", "convert_ldm_vae_checkpoint", "convert_ldm_clip_checkpoint",
              "convert_open_clip_checkpoint")
    missing = [name for name in needed if not hasattr(sfu, name)]
    if missing:
        raise BackendUnavailable(
            f"This diffusers version lacks {', '.join(missing)} in diffusers.loaders.single_file_utils; "
            "install a diffusers release that has them (0.28 to 0.42 do), or pass a diffusers folder.")
    return sfu


def _empty_init():
    try:
        from accelerate import init_empty_weights
    except ImportError:
        return contextlib.nullcontext()
    return init_empty_weights()


def _subdict(sd: Mapping, keys, prefix: str, skip: Callable[[str], bool] = lambda k: False) -> dict:
    return {k: sd[k] for k in sorted(keys) if k.startswith(prefix) and not skip(k)}


def _fit_keys(weights: dict, expected) -> dict:
    """Match transformers' CLIP key spelling (with or without "text_model."); drop the position_ids buffer."""
    fitted = {}
    for key, value in weights.items():
        if key not in expected:
            alt = key[len("text_model."):] if key.startswith("text_model.") else "text_model." + key
            if alt in expected:
                key = alt
            elif key.endswith("position_ids"):
                continue
        fitted[key] = value
    return fitted


def _mismatches(model, weights: dict) -> str:
    """"" when `weights` fit `model`'s state dict exactly; else what is missing, extra or misshapen."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshapen = [f"{k} {tuple(weights[k].shape)} != {tuple(expected[k].shape)}"
                 for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    return "; ".join(
        f"{label} ({len(items)}): {', '.join(items[:4])}{' …' if len(items) > 4 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)) if items)


def _materialize(model, weights: dict, *, dtype, device, what: str, source: str):
    """Load `weights` into the (empty) `model` strictly, casting floating tensors to `dtype` on `device`."""
    problems = _mismatches(model, weights)
    if problems:
        raise HeadshotError(
            f"{source}: the {what} weights do not fit the architecture read from the checkpoint ({problems}). The "
            "file may be damaged or a variant this loader does not know; pass the model's diffusers folder instead.",
            "conversion_failed")
    final = {}
    for key in list(weights):
        tensor = weights.pop(key)  # drop each source tensor as soon as its copy exists
        if tensor.is_floating_point():
            tensor = tensor.to(device=device, dtype=dtype)
        else:
            tensor = tensor.to(device=device)
        final[key] = tensor.contiguous()
    model.load_state_dict(final, strict=True, assign=True)
    model.to(device)
    if any(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()]):
        raise HeadshotError(f"{source}: the {what} kept uninitialised (meta) tensors after loading.",
                            "conversion_failed")
    return model


def _prepare_unet(sd: Mapping, keys: set, family: str, source: str = "this checkpoint"):
    """(empty UNet2DConditionModel, its weights renamed to diffusers' keys)."""
    from diffusers import UNet2DConditionModel

    sfu = _conversion_functions()
    config = _infer_unet_config(sd, keys, family, source)
    with _empty_init():
        unet = UNet2DConditionModel.from_config(config)
    return unet, sfu.convert_ldm_unet_checkpoint(_subdict(sd, keys, _UNET), config)


def _prepare_vae(sd: Mapping, keys: set, family: str):
    from diffusers import AutoencoderKL

    sfu = _conversion_functions()
    config = _infer_vae_config(sd, keys, family)
    with _empty_init():
        vae = AutoencoderKL.from_config(config)
    return vae, sfu.convert_ldm_vae_checkpoint(_subdict(sd, keys, _VAE), config)


def _prepare_text_encoders(sd: Mapping, keys: set, family: str) -> list[tuple[str, Any, dict]]:
    """[(description, empty text model, its weights in transformers' keys)] in the family's order."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    sfu = _conversion_functions()

    def openai_clip(prefix: str):
        config = _clip_text_config(sd, keys, prefix, openclip=False)
        with _empty_init():
            model = CLIPTextModel(config)
        weights = sfu.convert_ldm_clip_checkpoint(_subdict(sd, keys, prefix))
        weights = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in weights.items()}
        return "text encoder (CLIP ViT-L)", model, _fit_keys(weights, model.state_dict())

    def open_clip(prefix: str, *, penultimate: bool, cls, what: str):
        config = _clip_text_config(sd, keys, prefix, openclip=True, drop_last=penultimate)
        unused = f"{prefix}transformer.resblocks.{config.num_hidden_layers}."

        def skip(k: str) -> bool:
            if k.endswith(("logit_scale", "attn_mask")):
                return True
            # SD2 reads the penultimate block's output and never the projection
            return penultimate and (k.startswith(unused) or k == prefix + "text_projection")

        with _empty_init():
            model = cls(config)
        weights = sfu.convert_open_clip_checkpoint(model, _subdict(sd, keys, prefix, skip), prefix=prefix)
        return what, model, _fit_keys(weights, model.state_dict())

    if family == "sd1":
        return [openai_clip(_SD1_CLIP)]
    if family == "sd2":
        return [open_clip(_SD2_OPENCLIP, penultimate=True, cls=CLIPTextModel, what="text encoder (OpenCLIP ViT-H)")]
    return [openai_clip(_SGM_CLIP_L),
            open_clip(_SGM_BIGG, penultimate=False, cls=CLIPTextModelWithProjection,
                      what="text encoder 2 (OpenCLIP ViT-bigG)")]


def _build_unet(sd: Mapping, keys: set, family: str, *, dtype, device, source: str = "this checkpoint"):
    unet, weights = _prepare_unet(sd, keys, family, source)
    return _materialize(unet, weights, dtype=dtype, device=device, what="UNet", source=source)


def _build_vae(sd: Mapping, keys: set, family: str, *, dtype, device, source: str):
    vae, weights = _prepare_vae(sd, keys, family)
    return _materialize(vae, weights, dtype=dtype, device=device, what="VAE", source=source)


def _build_text_encoders(sd: Mapping, keys: set, family: str, *, dtype, device, source: str) -> list:
    return [_materialize(model, weights, dtype=dtype, device=device, what=what, source=source)
            for what, model, weights in _prepare_text_encoders(sd, keys, family)]


@torch.no_grad()
def _probe_prediction_type(unet) -> str:
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
    sample[:, :config.out_channels] = noise
    context = torch.zeros((1, CLIP_MAX_LENGTH, config.cross_attention_dim))
    added = None
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        pixels = size * 8
        added = {"text_embeds": torch.zeros((1, pooled)),
                 "time_ids": torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]], dtype=torch.float32)}

    def run(dtype):
        moved = None if added is None else {k: v.to(param.device, dtype) for k, v in added.items()}
        out = unet(sample.to(param.device, dtype), torch.tensor([TRAIN_SCHEDULE["num_train_timesteps"] - 1],
                                                                  device=param.device),
                   encoder_hidden_states=context.to(param.device, dtype), added_cond_kwargs=moved).sample
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


def _load_single_file(path: Path, *, tokenizer_dirs, dtype, device, say: Progress,
                      prediction_type: str | None, defer_unet: bool = False) -> BaseModel:
    say(f"reading {path.name}")
    sd, metadata = _read_checkpoint(path)
    keys = set(sd.keys())
    source = str(path)
    family, prediction = _detect(sd, keys, metadata, source)
    tokenizers = _tokenizers_for(family, tokenizer_dirs, first=None, second=None)
    say(f"converting the {family} text encoder{'s' if family == 'sdxl' else ''}")
    text_encoders = _build_text_encoders(sd, keys, family, dtype=dtype, device=device, source=source)
    def build_unet():
        say(f"converting the {family} UNet")
        return _build_unet(sd, keys, family, dtype=dtype, device=device, source=source)

    prediction = prediction or prediction_type
    unet = None if defer_unet and prediction is not None else build_unet()
    say("converting the VAE")
    vae = _build_vae(sd, keys, family, dtype=dtype, device=device, source=source)
    if prediction is None:
        if prediction_type is not None:
            prediction = prediction_type
        else:
            say("probing whether the SD2 UNet predicts noise (epsilon) or velocity (v)")
            prediction = _probe_prediction_type(unet)
    return BaseModel(family=family, prediction_type=prediction, unet=unet, vae=vae, text_encoders=text_encoders,
                     tokenizers=tokenizers, noise_scheduler=training_noise_scheduler(prediction), source=source,
                     unet_loader=None if unet is not None else build_unet)


# =============================================================================================
# diffusers folders and hub ids
# =============================================================================================

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


def _looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.lower().endswith(_FILE_SUFFIXES)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _hub_offline_constant(offline: bool):
    """Make huggingface_hub honour an HF_HUB_OFFLINE set after it was imported.

    huggingface_hub reads HF_HUB_OFFLINE once, at import. Even with local_files_only=True its
    request headers fetch a registry from the hub unless that constant is set, so while a hub id is
    resolved offline the constant is set too, and restored afterwards.
    """
    if not offline:
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _weights_variant(folder: Path) -> str | None:
    """"fp16" when a local component folder only has fp16-variant weights (…model.fp16.safetensors)."""
    if not folder.is_dir():
        return None
    names = [p.name for p in folder.iterdir()]
    plain = any(re.fullmatch(r"[\w-]+\.(safetensors|bin)", n) for n in names)
    if not plain and any(".fp16." in n for n in names):
        return "fp16"
    return None


def _load_diffusers(src: str, *, local: bool, tokenizer_dirs, dtype, device, say: Progress,
                    index: dict | None = None, defer_unet: bool = False) -> BaseModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    root = Path(src) if local else None
    local_only = True if local else _hub_offline()
    if index is None:
        index = _read_json(root / "model_index.json")

    def component(name: str) -> bool:
        entry = index.get(name)
        return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None

    def config_of(sub: str, cls) -> dict:
        if local:
            return _read_json(root / sub / "config.json")
        return dict(cls.load_config(src, subfolder=sub, local_files_only=local_only))

    if not component("unet") or not component("vae"):
        raise HeadshotError(f"{src} has no unet/vae in model_index.json, so it is no Stable Diffusion base model.",
                            "not_a_base_model")
    if not component("text_encoder"):
        raise HeadshotError(
            f"{src} has no text_encoder (an SDXL refiner or an image-conditioned pipeline); identity LoRAs are trained "
            "on an SD1/SD2/SDXL text-to-image base model.", "unsupported_base_model")
    unet_config = config_of("unet", UNet2DConditionModel)
    if unet_config.get("in_channels", 4) != 4:
        raise HeadshotError(
            f"{src} is an inpainting or otherwise conditioned model (its UNet takes {unet_config.get('in_channels')} "
            "input channels, not 4); train on the plain text-to-image base model.", "unsupported_base_model")
    if component("text_encoder_2") or unet_config.get("addition_embed_type") == "text_time":
        family = "sdxl"
    else:
        if local:
            te_config = _read_json(root / "text_encoder" / "config.json")
        else:
            from transformers import CLIPTextConfig

            te_config = CLIPTextConfig.from_pretrained(src, subfolder="text_encoder",
                                                       local_files_only=local_only).to_dict()
        openclip = te_config.get("hidden_act") == "gelu" or unet_config.get("cross_attention_dim") == 1024
        family = "sd2" if openclip else "sd1"
    scheduler_config = {}
    if component("scheduler"):
        if local:
            path = root / "scheduler" / "scheduler_config.json"
            scheduler_config = _read_json(path) if path.is_file() else {}
        else:
            from diffusers import DDPMScheduler

            scheduler_config = dict(DDPMScheduler.load_config(src, subfolder="scheduler",
                                                               local_files_only=local_only))
    prediction = scheduler_config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise HeadshotError(f"{src}: scheduler prediction_type {prediction!r} is not epsilon or v_prediction.",
                            "unsupported_base_model")

    if local:
        tokenizers = _tokenizers_for(family, tokenizer_dirs, first=root / "tokenizer", second=root / "tokenizer_2")
    else:
        tokenizers = _hub_tokenizers(src, family, tokenizer_dirs, local_only)

    def variant(sub: str):
        return _weights_variant(root / sub) if local else None

    def load_unet():
        say(f"loading the {family} UNet from {src}")
        return UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=dtype,
                                                    local_files_only=local_only, variant=variant("unet")).to(device)

    unet = None if defer_unet else load_unet()
    say("loading the VAE")
    vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=dtype, local_files_only=local_only,
                                        variant=variant("vae"))
    say("loading the text encoder" + ("s" if family == "sdxl" else ""))
    classes = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection}
    text_encoders = []
    for name in ("text_encoder", "text_encoder_2") if family == "sdxl" else ("text_encoder",):
        class_name = index[name][1]
        if class_name not in classes:
            raise HeadshotError(f"{src}: {name} is a {class_name}; SD text encoders are CLIPTextModel or "
                                "CLIPTextModelWithProjection.", "unsupported_base_model")
        text_encoders.append(classes[class_name].from_pretrained(src, subfolder=name, dtype=dtype,
                                                                 local_files_only=local_only, variant=variant(name)))
    for module in (vae, *text_encoders):
        module.to(device)
    return BaseModel(family=family, prediction_type=prediction, unet=unet, vae=vae, text_encoders=text_encoders,
                     tokenizers=tokenizers, noise_scheduler=training_noise_scheduler(prediction), source=src,
                     unet_loader=load_unet if unet is None else None)


def _load_from_hub(repo_id: str, *, tokenizer_dirs, dtype, device, say: Progress) -> BaseModel:
    offline = _hub_offline()
    say(f"looking up {repo_id} on the Hugging Face hub" + (" (offline: local cache only)" if offline else ""))
    try:
        from huggingface_hub import hf_hub_download

        with _hub_offline_constant(offline):
            index = _read_json(Path(hf_hub_download(repo_id, "model_index.json", local_files_only=offline)))
            return _load_diffusers(repo_id, local=False, tokenizer_dirs=tokenizer_dirs, dtype=dtype, device=device,
                                   say=say, index=index)
    except HeadshotError:
        raise
    except Exception as e:  # offline, no network, not cached, no such repo: all end the same way
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "the hub cannot be reached"
        raise HeadshotError(
            f"{repo_id!r} is no local file or folder, so it was tried as a Hugging Face hub id, and it could not be "
            f"loaded from the hub: {why} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no details'}). Give a local .safetensors/.ckpt file or a "
            "diffusers folder instead.", "hub_unreachable") from e


# =============================================================================================
# tokenizers (local sources only)
# =============================================================================================

def _tokenizers_for(family: str, tokenizer_dirs, *, first: Path | None, second: Path | None) -> list:
    dirs = [d for d in (first,) if d is not None] + list(tokenizer_dirs)
    if family == "sd1":
        return [find_clip_tokenizer(dirs)]
    if family == "sd2":
        # OpenCLIP pads with token 0 ("!"), which diffusers' SD2 tokenizer copies
        return [find_clip_tokenizer(dirs, pad_token="!")]
    dirs_2 = [d for d in (second,) if d is not None] + list(tokenizer_dirs)
    return [find_clip_tokenizer(dirs), find_clip_tokenizer(dirs_2, pad_token="!")]


def _hub_tokenizers(repo_id: str, family: str, tokenizer_dirs, local_only: bool) -> list:
    from transformers import CLIPTokenizer

    subs = ["tokenizer", "tokenizer_2"] if family == "sdxl" else ["tokenizer"]
    tokenizers = []
    for i, sub in enumerate(subs):
        pad = "!" if (family == "sd2" or i == 1) else None
        try:
            tokenizer = CLIPTokenizer.from_pretrained(repo_id, subfolder=sub, local_files_only=local_only)
        except Exception:
            tokenizer = find_clip_tokenizer(tokenizer_dirs, pad_token=pad)
        tokenizers.append(_finish_tokenizer(tokenizer, pad))
    return tokenizers


def _finish_tokenizer(tokenizer, pad_token: str | None):
    # ComfyUI's sd1_tokenizer says model_max_length 8192 (it chunks long prompts itself); the
    # text encoders have 77 positions
    if not tokenizer.model_max_length or tokenizer.model_max_length > CLIP_MAX_LENGTH:
        tokenizer.model_max_length = CLIP_MAX_LENGTH
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    return tokenizer


def _has_tokenizer_files(folder: Path) -> bool:
    return ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) or \
        (folder / "tokenizer.json").is_file()


def _hf_hub_cache() -> Path:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        return Path.home() / ".cache" / "huggingface" / "hub"


def _hf_cached_clip_dir() -> Path | None:
    """The cached snapshot folder of openai/clip-vit-large-patch14's tokenizer, looked up without any network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cache = str(_hf_hub_cache())
    found = [try_to_load_from_cache(OPENAI_CLIP_REPO, name, cache_dir=cache) for name in ("vocab.json", "merges.txt")]
    if all(isinstance(p, str) for p in found) and Path(found[0]).parent == Path(found[1]).parent:
        return Path(found[0]).parent
    return None


def _open_clip_bpe_path() -> Path | None:
    """open_clip_torch's copy of CLIP's BPE vocabulary, found without importing open_clip."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


def _load_tokenizer_dir(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def find_clip_tokenizer(tokenizer_dirs: Sequence[Path] = (), *, pad_token: str | None = None):
    """A CLIPTokenizer (model_max_length 77) from local sources only, searched in this order:

    1. each folder in `tokenizer_dirs` holding vocab.json + merges.txt (or tokenizer.json), or a
       tokenizer/ subfolder that does (a diffusers model folder);
    2. the Hugging Face cache's openai/clip-vit-large-patch14 (never downloaded);
    3. the BPE vocabulary inside the open_clip_torch package, turned into vocab.json + merges.txt.

    `pad_token` replaces the source's padding token ("!" for OpenCLIP-based encoders: SD2, SDXL's
    second). Raises BackendUnavailable naming every place searched when none has a tokenizer.
    """
    searched = []
    for folder in map(Path, tokenizer_dirs):
        for candidate in (folder, folder / "tokenizer"):
            if _has_tokenizer_files(candidate):
                try:
                    return _finish_tokenizer(_load_tokenizer_dir(candidate), pad_token)
                except Exception as e:  # a damaged folder: say so and keep looking
                    searched.append(f"{candidate}: has tokenizer files but they do not load ({e})")
                    break
        else:
            searched.append(f"{folder}: no vocab.json + merges.txt" + ("" if folder.is_dir() else " (no such folder)"))
    cached = _hf_cached_clip_dir()
    if cached is not None:
        try:
            return _finish_tokenizer(_load_tokenizer_dir(cached), pad_token)
        except Exception as e:
            searched.append(f"Hugging Face cache {cached}: {OPENAI_CLIP_REPO} is cached but does not load ({e})")
    else:
        searched.append(f"Hugging Face cache {_hf_hub_cache()}: {OPENAI_CLIP_REPO} is not cached")
    bpe = _open_clip_bpe_path()
    if bpe is not None:
        return clip_tokenizer_from_bpe(bpe, pad_token=pad_token)
    searched.append("open_clip_torch's bpe_simple_vocab_16e6.txt.gz: open_clip_torch is not installed")
    raise BackendUnavailable(
        "No CLIP tokenizer was found on this machine (nothing is downloaded). Searched: "
        + "; ".join(f"({i}) {s}" for i, s in enumerate(searched, 1))
        + ". Fix: pip install open_clip_torch (it ships CLIP's BPE vocabulary), or point --tokenizer-dir at a folder "
          "with vocab.json and merges.txt (ComfyUI's comfy/sd1_tokenizer, or a diffusers model's tokenizer/ folder).")


def _byte_characters() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table.

    Bytes that are printable Latin-1 characters stand for themselves; the other 68 (controls,
    space, soft hyphen…) are given the characters from U+0100 upward, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.lru_cache(maxsize=4)
def _clip_vocabulary(bpe_path: str) -> tuple[tuple[tuple[str, str], ...], dict[str, int]]:
    """(merges, vocab) of CLIP's tokenizer from its gzipped BPE merge list (49408 tokens).

    The vocabulary is: the 256 byte characters, the same with the end-of-word mark "</w>", one
    token per merge (48894 merges: the file's first line is a header and CLIP keeps
    49152 - 256 - 2 of them), then <|startoftext|> and <|endoftext|>.
    """
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    count = 49152 - 256 - 2
    merges = tuple(tuple(line.split()) for line in lines[1:1 + count])
    if len(merges) != count or any(len(m) != 2 for m in merges):
        raise BackendUnavailable(f"{bpe_path} is not CLIP's BPE merge list (expected {count} pairs); reinstall "
                                 "open_clip_torch or point --tokenizer-dir at a CLIP tokenizer folder.")
    characters = list(_byte_characters().values())
    tokens = characters + [c + "</w>" for c in characters] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return merges, {token: i for i, token in enumerate(tokens)}


def clip_tokenizer_from_bpe(bpe_path: str | Path | None = None, *, pad_token: str | None = None):
    """A CLIPTokenizer built from CLIP's BPE merge list (by default the one inside open_clip_torch)."""
    from transformers import CLIPTokenizer

    path = Path(bpe_path) if bpe_path is not None else _open_clip_bpe_path()
    if path is None:
        raise BackendUnavailable("open_clip_torch is not installed, so CLIP's BPE vocabulary is missing; "
                                 "pip install open_clip_torch, or point --tokenizer-dir at a CLIP tokenizer folder.")
    merges, vocab = _clip_vocabulary(str(path))
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=CLIP_MAX_LENGTH)
    return _finish_tokenizer(tokenizer, pad_token)


def write_clip_tokenizer_files(folder: str | Path, *, pad_token: str = "<|endoftext|>",
                               bpe_path: str | Path | None = None) -> Path:
    """Write vocab.json, merges.txt and the configs of CLIP's tokenizer into `folder` (diffusers' tokenizer/ layout)."""
    path = Path(bpe_path) if bpe_path is not None else _open_clip_bpe_path()
    if path is None:
        raise BackendUnavailable("open_clip_torch is not installed; pip install open_clip_torch.")
    merges, vocab = _clip_vocabulary(str(path))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": CLIP_MAX_LENGTH, "do_lower_case": True,
              **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
