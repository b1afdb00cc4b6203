"""Which family a base model belongs to, from what is in it: one rule for single-file checkpoints
(keys, shapes, metadata) and one for diffusers folders (model_index.json and component configs).

Both read only the fields of the registered families, never a file name. Nothing is loaded: a
.safetensors file is read lazily, so detection costs its header and a few shapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import HeadshotError
from .checkpoint_file import clip_text_prefix, read_checkpoint, tensor_shape
from .family import Family, TextEncoder
from .registry import families

# an LDM/SGM UNet's first and last layers, under the family's UNet prefix
_UNET_KEYS = ("input_blocks.0.0.weight", "out.2.weight")


def detect_checkpoint(
    state_dict: Mapping,
    *,
    metadata: Mapping[str, str] | None = None,
    source: str = "this checkpoint",
    needs_vae: bool = True,
) -> tuple[Family, str | None]:
    """(family, prediction type) of a single-file checkpoint; the prediction type is None when only the
    weights can tell (an SD2 file without a marker: see train's probe).

    The family is the one whose UNet and every text encoder are in the file under its prefixes. Raises
    HeadshotError not_a_base_model for LoRAs, VAEs, embeddings and other files that are no whole base
    model, and unsupported_base_model for variants that cannot be trained on (refiner, inpainting, unCLIP).
    """
    keys = set(state_dict.keys())
    metadata = dict(metadata or {})
    with_unet = [f for f in families() if all(f.checkpoint_unet_prefix + k in keys for k in _UNET_KEYS)]
    if not with_unet:
        what, fix = _describe_non_base(keys)
        raise HeadshotError(f"{source} is not a Stable Diffusion base model: this is {what}; {fix}", "not_a_base_model")
    for family in with_unet:
        for marker, absent, why in family.unsupported_variants:
            if marker in keys and absent not in keys:
                raise HeadshotError(f"{source} is {why}", "unsupported_base_model")
    matches = [f for f in with_unet if all(encoder_embedding_key(keys, e) for e in f.text_encoders)]
    if not matches:
        prefixes = sorted({e.checkpoint_prefix.split(".")[0] for f in with_unet for e in f.text_encoders})
        raise HeadshotError(
            f"{source} is not a whole base model: it holds a UNet (model.diffusion_model.*) but no text encoder "
            f"({' or '.join(p + '.*' for p in prefixes)}); pass the full checkpoint or a diffusers folder.",
            "not_a_base_model",
        )
    family = max(matches, key=lambda f: len(f.text_encoders))  # the one that explains the most encoders
    unet = family.checkpoint_unet_prefix
    size_conditioned = unet + "label_emb.0.0.weight" in keys
    if family.size_conditioning and not size_conditioned:
        raise HeadshotError(
            f"{source} has {family.title}'s text encoders but its UNet lacks label_emb ({family.title}'s size and "
            f"crop conditioning), so it is no {family.title} base model that can be loaded; pass a {family.title} "
            "base checkpoint.",
            "unsupported_base_model",
        )
    if size_conditioned and not family.size_conditioning:
        raise HeadshotError(
            f"{source} is a {family.title} variant with class-conditioned UNet (label_emb: unCLIP or an upscaler); "
            "identity LoRAs are trained on a plain text-to-image base model.",
            "unsupported_base_model",
        )
    if needs_vae and not any(k.startswith(family.checkpoint_vae_prefix) for k in keys):
        raise HeadshotError(
            f"{source} has no VAE ({family.checkpoint_vae_prefix}* keys); give the VAE it is meant for with --vae "
            "FILE (in ComfyUI: the training node's vae_name, a file in models/vae), or pass a checkpoint that "
            "includes its VAE.",
            "checkpoint_without_vae",
        )
    in_channels = tensor_shape(state_dict, unet + "input_blocks.0.0.weight")[1]
    if in_channels != 4:
        raise HeadshotError(
            f"{source} is an inpainting or otherwise conditioned {family.title} model (its UNet takes "
            f"{in_channels} input channels, not 4); train on the plain text-to-image base model.",
            "unsupported_base_model",
        )
    embeddings = [encoder_embedding_key(keys, e) for e in family.text_encoders]
    width = sum(tensor_shape(state_dict, key)[1] for key in embeddings if key is not None)
    context = context_width(state_dict, keys, unet)
    if context != width:
        raise HeadshotError(
            f"{source}: the UNet's cross-attention expects {context}-wide text features but the text encoder(s) "
            f"give {width}; the checkpoint mixes parts of different models and cannot be trained on.",
            "not_a_base_model",
        )
    return family, _prediction_type(keys, metadata, family)


def encoder_embedding_key(keys, encoder: TextEncoder) -> str | None:
    """The token-embedding key of `encoder` in a single file, or None when the file lacks it."""
    if encoder.openclip_layout:
        key = encoder.checkpoint_prefix + "token_embedding.weight"
        return key if key in keys else None
    prefix = clip_text_prefix(keys, encoder.checkpoint_prefix)
    return None if prefix is None else prefix + "embeddings.token_embedding.weight"


def context_width(state_dict: Mapping, keys, unet_prefix: str) -> int:
    """The width of the text features the UNet's cross-attention takes."""
    for key in sorted(keys):
        if key.startswith(unet_prefix) and key.endswith("attn2.to_k.weight"):
            return tensor_shape(state_dict, key)[1]
    raise HeadshotError(
        "the UNet has no cross-attention (attn2) layers, so it is no text-to-image model.", "not_a_base_model"
    )


def _prediction_type(keys, metadata: dict, family: Family) -> str | None:
    # 1. Stability's ModelSpec metadata ("modelspec.prediction_type": "epsilon" | "v")
    declared = str(metadata.get("modelspec.prediction_type", "")).strip().lower()
    if declared in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if declared in ("epsilon", "eps"):
        return "epsilon"
    # 2. the marker tensor that v-prediction fine-tunes put in the checkpoint (an empty "v_pred" key)
    if "v_pred" in keys:
        return "v_prediction"
    # 3. what the family was released as; None where it came in both kinds (SD2: 2.x-base epsilon,
    #    2.x 768 v), so only the weights can tell
    return family.released_prediction_type


def _describe_non_base(keys: set) -> tuple[str, str]:
    """What a file that is no base model looks like, and what to do with it."""
    sample = sorted(keys)[:3]
    if not keys:
        return "an empty file (no tensors)", "pass a Stable Diffusion checkpoint."
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        return (
            "a LoRA (lora_unet_…/lora_te… keys)",
            "pass it with --lora, not --base-model, and give the checkpoint it was trained on as --base-model.",
        )
    if any(s in k for k in keys for s in (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down.")):
        return (
            "a LoRA (lora_down/lora_up or lora_A/lora_B keys)",
            "pass it with --lora, not --base-model, and give the checkpoint it was trained on as --base-model.",
        )
    if any(s in k for k in keys for s in ("hada_w1", "lokr_w1", ".oft_")):
        return "a LyCORIS adapter (LoHa/LoKr/OFT keys)", "pass it as a LoRA, not as --base-model."
    if keys & {"emb_params", "string_to_param", "clip_l", "clip_g", "string_to_token"}:
        return (
            "a textual-inversion embedding",
            "use it as an embedding in your prompts; --base-model needs a full checkpoint.",
        )
    if any(k.startswith(("control_model.", "controlnet_cond_embedding.", "input_hint_block.")) for k in keys):
        return "a ControlNet", "ControlNets are used at generation time; pass a full checkpoint as --base-model."
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys):
        return "a Flux model", "only SD 1.x, SD 2.x and SDXL base models can be trained here."
    if any("joint_blocks." in k for k in keys):
        return "a Stable Diffusion 3 (MMDiT) model", "only SD 1.x, SD 2.x and SDXL base models can be trained here."
    vae_prefixes = ("", "vae.", *{f.checkpoint_vae_prefix for f in families()})
    for p in vae_prefixes:
        if p + "encoder.conv_in.weight" in keys and p + "decoder.conv_in.weight" in keys:
            return (
                "a VAE alone (encoder.*/decoder.* keys)",
                "a base model needs the UNet and text encoder too: pass the full checkpoint (it has its own VAE) "
                "or a diffusers folder.",
            )
    if "conv_in.weight" in keys and any(k.startswith("down_blocks.") for k in keys):
        return (
            "one diffusers component's weights (down_blocks.* keys)",
            "pass the whole diffusers folder (the one with model_index.json), not a single component file.",
        )
    if any(k.startswith(("text_model.", "transformer.resblocks.", "encoder.layers.")) for k in keys):
        return "a text encoder alone", "pass the full checkpoint or a diffusers folder as --base-model."
    return (
        f"not a Stable Diffusion checkpoint (no model.diffusion_model.* keys; first keys: {', '.join(sample)})",
        "pass an SD 1.x, SD 2.x or SDXL checkpoint, or a diffusers folder.",
    )


# ---------------------------------------------------------------------------------------------
# diffusers folders
# ---------------------------------------------------------------------------------------------


def detect_diffusers(index: Mapping, read_config: Callable[[str], Mapping]) -> Family | None:
    """The family of a diffusers model from its model_index.json and `read_config(subfolder)`.

    Candidates are the families whose text encoders are exactly the index's text_encoder* components;
    then each clue narrows them, and a clue that would leave none is ignored: the UNet's size and crop
    conditioning (addition_embed_type text_time), its cross-attention width, and whether the first text
    encoder is OpenCLIP (gelu) or OpenAI CLIP. None when no family has these text encoders.
    """

    def present(name: str) -> bool:
        entry = index.get(name)
        return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None

    text_folders = {name for name in index if name.startswith("text_encoder") and present(name)}
    candidates = [f for f in families() if {e.subfolder for e in f.text_encoders} == text_folders]
    if len(candidates) > 1:
        unet = read_config("unet")
        if unet.get("addition_embed_type") == "text_time":
            candidates = _narrow(candidates, lambda f: f.size_conditioning)
        candidates = _narrow(candidates, lambda f: f.context_width == unet.get("cross_attention_dim"))
    if len(candidates) > 1:
        openclip = read_config(candidates[0].text_encoders[0].subfolder).get("hidden_act") == "gelu"
        candidates = _narrow(candidates, lambda f: f.text_encoders[0].openclip_layout == openclip)
    return candidates[0] if candidates else None


def _narrow(candidates: list[Family], clue: Callable[[Family], bool]) -> list[Family]:
    kept = [f for f in candidates if clue(f)]
    return kept or candidates


def diffusers_folder_family(folder: str | Path) -> Family | None:
    """The family of a local diffusers folder from its JSON files (None when they say nothing)."""
    folder = Path(folder)

    def read(*parts: str) -> dict:
        try:
            data = json.loads(folder.joinpath(*parts).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    index = read("model_index.json")
    if not index:
        return None
    return detect_diffusers(index, lambda sub: read(sub, "config.json"))


def base_model_family(source: str | Path, *, needs_vae: bool = False) -> Family | None:
    """The family of a local base model (diffusers folder or .safetensors file) without loading it.

    None for a hub id, a missing path or a pickled .ckpt (reading those means loading them). `needs_vae`: refuse a
    single file saved without its VAE (by default it is a base model all the same: its VAE can be given apart).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return diffusers_folder_family(path)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] != b"{":  # not safetensors
        return None
    state_dict, metadata = read_checkpoint(path)
    return detect_checkpoint(state_dict, metadata=metadata, source=path.name, needs_vae=needs_vae)[0]
