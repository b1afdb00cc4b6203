"""Base models from a diffusers folder (the one holding model_index.json) or a Hugging Face hub id.

A hub id is tried only when the name is not a local path, and nothing is downloaded when
HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from ..errors import HeadshotError
from ..families import detect_diffusers, family_names
from .base_model import PREDICTION_TYPES, BaseModel, Progress, training_noise_scheduler
from .clip_tokenizers import family_tokenizers, hub_tokenizers
from .vae_files import separate_vae

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


def looks_like_hub_id(text: str) -> bool:
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
    """ "fp16" when a local component folder only has fp16-variant weights (…model.fp16.safetensors)."""
    if not folder.is_dir():
        return None
    names = [p.name for p in folder.iterdir()]
    plain = any(re.fullmatch(r"[\w-]+\.(safetensors|bin)", n) for n in names)
    if not plain and any(".fp16." in n for n in names):
        return "fp16"
    return None


def load_diffusers(
    src: str,
    *,
    local: bool,
    tokenizer_dirs,
    dtype,
    device,
    say: Progress,
    index: dict | None = None,
    defer_unet: bool = False,
    defer_encoders: bool = False,
    vae_dtype=None,
    text_encoder_dtype=None,
    vae_file: Path | None = None,
) -> BaseModel:
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = Path(src) if local else None  # set exactly when local; the branches below test it
    local_only = True if local else _hub_offline()
    if index is None:
        assert root is not None  # load_from_hub reads a hub model's index and passes it in
        index = _read_json(root / "model_index.json")

    def component(name: str) -> bool:
        entry = index.get(name)
        return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None

    def config_of(sub: str, cls) -> dict:
        if root is not None:
            return _read_json(root / sub / "config.json")
        return dict(cls.load_config(src, subfolder=sub, local_files_only=local_only))

    if not component("unet") or not component("vae"):
        raise HeadshotError(
            f"{src} has no unet/vae in model_index.json, so it is no Stable Diffusion base model.", "not_a_base_model"
        )
    if not component("text_encoder"):
        raise HeadshotError(
            f"{src} has no text_encoder (an SDXL refiner or an image-conditioned pipeline); identity LoRAs are trained "
            "on an SD1/SD2/SDXL text-to-image base model.",
            "unsupported_base_model",
        )
    unet_config = config_of("unet", UNet2DConditionModel)
    if unet_config.get("in_channels", 4) != 4:
        raise HeadshotError(
            f"{src} is an inpainting or otherwise conditioned model (its UNet takes {unet_config.get('in_channels')} "
            "input channels, not 4); train on the plain text-to-image base model.",
            "unsupported_base_model",
        )

    def read_config(sub: str) -> dict:
        if sub == "unet":
            return unet_config
        if root is not None:
            return _read_json(root / sub / "config.json") if (root / sub / "config.json").is_file() else {}
        return transformers.CLIPTextConfig.from_pretrained(src, subfolder=sub, local_files_only=local_only).to_dict()

    family = detect_diffusers(index, read_config)
    if family is None:
        encoders = sorted(name for name in index if name.startswith("text_encoder") and component(name))
        raise HeadshotError(
            f"{src} has the text encoders {', '.join(encoders)}, which no known family has "
            f"({', '.join(family_names())}); pass an SD1/SD2/SDXL text-to-image base model.",
            "unsupported_base_model",
        )
    scheduler_config = {}
    if component("scheduler"):
        if root is not None:
            path = root / "scheduler" / "scheduler_config.json"
            scheduler_config = _read_json(path) if path.is_file() else {}
        else:
            from diffusers import DDPMScheduler

            scheduler_config = dict(DDPMScheduler.load_config(src, subfolder="scheduler", local_files_only=local_only))
    prediction = scheduler_config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise HeadshotError(
            f"{src}: scheduler prediction_type {prediction!r} is not epsilon or v_prediction.", "unsupported_base_model"
        )

    # a VAE file in place of vae/ (which is then never read)
    separate = separate_vae(vae_file, family, dtype=vae_dtype or dtype, device=device) if vae_file else None

    def variant(sub: str):
        return _weights_variant(root / sub) if root is not None else None

    def load_unet():
        say(f"loading the {family.name} UNet from {src}")
        return UNet2DConditionModel.from_pretrained(
            src, subfolder="unet", torch_dtype=dtype, local_files_only=local_only, variant=variant("unet")
        ).to(device)

    def load_encoders():
        if root is not None:
            tokenizers = family_tokenizers(family, tokenizer_dirs, model_folder=root)
        else:
            tokenizers = hub_tokenizers(src, family, tokenizer_dirs, local_only)
        say("loading the VAE")
        vae = (
            separate[1]()
            if separate
            else AutoencoderKL.from_pretrained(
                src,
                subfolder="vae",
                torch_dtype=vae_dtype or dtype,
                local_files_only=local_only,
                variant=variant("vae"),
            )
        )
        say("loading the text encoder" + ("s" if len(family.text_encoders) > 1 else ""))
        text_encoders = [
            getattr(transformers, index[name][1]).from_pretrained(
                src,
                subfolder=name,
                **_dtype_keyword(transformers, text_encoder_dtype or dtype),
                local_files_only=local_only,
                variant=variant(name),
            )
            for name in (encoder.subfolder for encoder in family.text_encoders)
        ]
        for module in (vae, *text_encoders):
            module.to(device)
        return vae, text_encoders, tokenizers

    classes = ("CLIPTextModel", "CLIPTextModelWithProjection")
    for name in (encoder.subfolder for encoder in family.text_encoders):
        if index[name][1] not in classes:
            raise HeadshotError(
                f"{src}: {name} is a {index[name][1]}; SD text encoders are CLIPTextModel or "
                "CLIPTextModelWithProjection.",
                "unsupported_base_model",
            )
    vae, text_encoders, tokenizers = (None, [], []) if defer_encoders else load_encoders()
    unet = None if defer_unet else load_unet()
    return BaseModel(
        family=family.name,
        prediction_type=prediction,
        unet=unet,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        noise_scheduler=training_noise_scheduler(prediction),
        source=src,
        unet_loader=load_unet if unet is None else None,
        encoders_loader=load_encoders if defer_encoders else None,
        vae_config=separate[0] if separate else config_of("vae", AutoencoderKL) if defer_encoders else None,
    )


def load_from_hub(
    repo_id: str,
    *,
    tokenizer_dirs,
    dtype,
    device,
    say: Progress,
    vae_dtype=None,
    text_encoder_dtype=None,
    vae_file: Path | None = None,
) -> BaseModel:
    offline = _hub_offline()
    say(f"looking up {repo_id} on the Hugging Face hub" + (" (offline: local cache only)" if offline else ""))
    try:
        from huggingface_hub import hf_hub_download

        with _hub_offline_constant(offline):
            index = _read_json(Path(hf_hub_download(repo_id, "model_index.json", local_files_only=offline)))
            return load_diffusers(
                repo_id,
                local=False,
                tokenizer_dirs=tokenizer_dirs,
                dtype=dtype,
                vae_dtype=vae_dtype,
                text_encoder_dtype=text_encoder_dtype,
                device=device,
                say=say,
                index=index,
                vae_file=vae_file,
            )
    except HeadshotError:
        raise
    except Exception as e:  # offline, no network, not cached, no such repo: all end the same way
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "the hub cannot be reached"
        raise HeadshotError(
            f"{repo_id!r} is no local file or folder, so it was tried as a Hugging Face hub id, and it could not be "
            f"loaded from the hub: {why} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no details'}). Give a local .safetensors/.ckpt file or a "
            "diffusers folder instead.",
            "hub_unreachable",
        ) from e


def _dtype_keyword(transformers, dtype) -> dict:
    """transformers 4.56 renamed from_pretrained's torch_dtype to dtype; older ones (WebUIs pin 4.30 and
    4.46) keep an unknown dtype as a config attribute, which then fails to serialise."""
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
