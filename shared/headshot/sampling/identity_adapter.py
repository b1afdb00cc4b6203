"""IP-Adapter FaceID in a diffusers pipeline: read the file safely, check it fits the UNet, load it
through diffusers' `load_ip_adapter`, and hand `ip_adapter_image_embeds` to each pipeline call.

The file layout (tencent-ailab/IP-Adapter's ip-adapter-faceid[-plusv2]_sd15 / _sdxl files):
  image_proj.*  FaceID: MLPProjModel (proj.0, proj.2, norm); FaceID Plus: ProjPlusModel (the same
                plus perceiver_resampler.*, which reads the CLIP image embedding of the aligned face)
  ip_adapter.{i}.to_k_ip.weight, .to_v_ip.weight            each cross-attention processor i
  ip_adapter.{i}.to_{q,k,v,out}_lora.{down,up}.weight       the FaceID LoRA, every attention processor i
where i counts `unet.attn_processors` in order (so cross-attention is 1, 3, 5, ...).

The LoRA part goes through our forward hooks (`lora_patch`) rather than diffusers' `load_lora_weights`:
that one needs peft's adapter API and wraps the Linear layers the identity LoRAs' hooks sit on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import HeadshotError
from .protocol import IdentityAdapter

ADAPTER_SUFFIXES = (".safetensors", ".bin")
ID_EMBEDDING_DIM = 512  # insightface w600k_r50, what FaceID was trained on
#: FaceID LoRA part -> the attention layer it adds to
LORA_TARGETS = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor's normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_FAMILY_BY_WIDTH = {768: "SD1.5", 1024: "SD2", 2048: "SDXL"}


def read_adapter_file(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """{"image_proj": ..., "ip_adapter": ...} from a .safetensors file, or from a .bin read with
    torch.load(weights_only=True): tensors and plain containers only, any other pickled object refused."""
    path = Path(path)
    if not path.is_file():
        raise HeadshotError(f"identity adapter {path} not found", "adapter_missing")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    part, _, rest = key.partition(".")
                    if part in state:
                        state[part][rest] = f.get_tensor(key)
        except Exception as exc:  # safetensors raises its own untyped errors for damaged files
            raise HeadshotError(
                f"{path.name} cannot be read ({exc}); download it again", "adapter_unreadable"
            ) from None
        return state
    if path.suffix.lower() != ".bin":
        raise HeadshotError(f"{path.name}: an identity adapter is a .safetensors or .bin file", "adapter_unreadable")
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code in the pickle, RuntimeError for damage
        raise HeadshotError(
            f"{path.name} holds something other than tensors ({type(exc).__name__}), so it is not read: "
            "nothing read from disk is unpickled. Use the official file or a .safetensors copy",
            "adapter_unreadable",
        ) from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(p), dict) for p in ("image_proj", "ip_adapter")):
        raise HeadshotError(
            f"{path.name} is not an IP-Adapter file (no image_proj / ip_adapter parts)", "adapter_mismatch"
        )
    return {part: dict(raw[part]) for part in ("image_proj", "ip_adapter")}


def adapter_kind(state: dict, name: str) -> str:
    """ "faceid" or "faceid_plus"; any other IP-Adapter (it reads a CLIP image, not a face identity) is refused."""
    proj = state["image_proj"]
    if not proj or not state["ip_adapter"]:
        raise HeadshotError(
            f"{name} is not an IP-Adapter file (no image_proj / ip_adapter weights)", "adapter_mismatch"
        )
    if "latents" in proj or "proj.weight" in proj or "proj.3.weight" in proj or "norm.weight" not in proj:
        raise HeadshotError(
            f"{name} is an IP-Adapter but not a FaceID one (it takes a picture, not a face identity); use "
            "ip-adapter-faceid_sd15.bin or ip-adapter-faceid-plusv2_sd15.bin (or their _sdxl versions)",
            "adapter_mismatch",
        )
    width = proj["proj.0.weight"].shape[1]
    if width != ID_EMBEDDING_DIM:
        raise HeadshotError(f"{name} takes a {width}-d face embedding, not ArcFace's 512", "adapter_mismatch")
    return "faceid_plus" if "perceiver_resampler.proj_in.weight" in proj else "faceid"


def expected_keys(unet) -> tuple[set[str], dict[str, str]]:
    """(the to_k_ip / to_v_ip keys this UNet takes, FaceID LoRA key stem -> the layer it adds to)."""
    ip_keys, lora = set(), {}
    for i, name in enumerate(unet.attn_processors):
        layer = name.removesuffix(".processor")
        if not name.endswith("attn1.processor"):
            ip_keys |= {f"{i}.to_k_ip.weight", f"{i}.to_v_ip.weight"}
        lora.update({f"{i}.{part}": f"{layer}.{target}" for part, target in LORA_TARGETS.items()})
    return ip_keys, lora


def check_fits(state: dict, unet, name: str) -> dict[str, str]:
    """Every key of the file has its place in this UNet (else a message naming the family it is for);
    returns the LoRA stems present, mapped to their layers."""
    proj = state["image_proj"]
    width = (proj.get("perceiver_resampler.proj_out.weight", proj["norm.weight"])).shape[0]
    ours = unet.config.cross_attention_dim
    if width != ours:
        made_for = _FAMILY_BY_WIDTH.get(width, f"a model with text width {width}")
        raise HeadshotError(
            f"{name} is made for {made_for}; the base model has text width {ours} "
            f"({_FAMILY_BY_WIDTH.get(ours, 'another family')}): use the FaceID file of the base model's family",
            "adapter_mismatch",
        )
    ip_keys, lora_layers = expected_keys(unet)
    present = {stem: layer for stem, layer in lora_layers.items() if f"{stem}.down.weight" in state["ip_adapter"]}
    if present and len(present) != len(lora_layers):
        present = {}  # a partial LoRA: its keys are reported unused below
    usable = ip_keys | {f"{stem}.{side}.weight" for stem in present for side in ("down", "up")}
    unused = sorted(set(state["ip_adapter"]) - usable)
    missing = sorted(ip_keys - set(state["ip_adapter"]))
    if unused or missing:
        detail = f"{len(unused)} of its keys have no place in it (e.g. {unused[0]})" if unused else ""
        detail += ("; " if detail else "") + (f"{len(missing)} keys it needs are absent" if missing else "")
        raise HeadshotError(
            f"{name} does not fit this base model's UNet: {detail}; use the FaceID file made for its family",
            "adapter_mismatch",
        )
    return present


@dataclass
class LoadedAdapter:
    path: str
    kind: str  # "faceid" | "faceid_plus"
    shortcut: bool  # FaceID Plus v2 adds the identity tokens back after the resampler
    lora_name: str | None  # its LoRA's name in the LoraPatches, None when the file has none
    keys: int  # keys of the file, all of them used


def load_adapter(pipe, path: str | Path, patches) -> LoadedAdapter:
    """Load the FaceID file into `pipe`'s UNet (shared by every pipeline over it) and its LoRA into `patches`."""
    path = Path(path)
    state = read_adapter_file(path)
    kind = adapter_kind(state, path.name)
    lora_layers = check_fits(state, pipe.unet, path.name)
    core = {
        "image_proj": state["image_proj"],
        "ip_adapter": {k: v for k, v in state["ip_adapter"].items() if "_lora." not in k},
    }
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its "no image encoder loaded" notice: we pass embeddings
    try:
        # a dict, not a path: diffusers then reads nothing from disk and loads no image encoder
        pipe.load_ip_adapter(core, subfolder=None, weight_name=None, image_encoder_folder=None, low_cpu_mem_usage=False)
    finally:
        diffusers_logging.set_verbosity(level)
    lora_name = None
    if lora_layers:
        lora_name = f"faceid:{path}"
        pairs = {
            layer: (state["ip_adapter"][f"{stem}.down.weight"], state["ip_adapter"][f"{stem}.up.weight"], 1.0)
            for stem, layer in lora_layers.items()
        }
        patches.add_layers(lora_name, pairs)
    keys = len(state["image_proj"]) + len(state["ip_adapter"])
    # v2 is told apart by name only (the keys are v1's), as ComfyUI_IPAdapter_plus does
    return LoadedAdapter(str(path), kind, kind == "faceid_plus" and "v2" in path.stem.lower(), lora_name, keys)


def load_image_encoder(folder: str | None, adapter: str, dtype, device):
    """The CLIP vision model FaceID Plus reads the face with, from a local folder (config.json + weights)."""
    if not folder or not (Path(folder) / "config.json").is_file():
        raise HeadshotError(
            f"{Path(adapter).name} is FaceID Plus: it needs the CLIP image encoder it was trained with "
            "(ViT-H-14; h94/IP-Adapter's models/image_encoder: config.json + model.safetensors) in a folder; "
            f"give it with --image-encoder DIR{f' ({folder} has no config.json)' if folder else ''}",
            "adapter_missing",
        )
    from transformers import CLIPVisionModelWithProjection

    try:  # safetensors only: a pytorch_model.bin would be unpickled
        model = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise HeadshotError(
            f"CLIP image encoder in {folder} cannot be loaded ({str(exc).splitlines()[0]}); it needs config.json "
            "and model.safetensors (h94/IP-Adapter's models/image_encoder)",
            "adapter_missing",
        ) from None
    torch.nn.Module.to(model, device=device, dtype=dtype)  # transformers types `to` oddly
    return model.eval()


@torch.no_grad()
def clip_face_states(encoder, face) -> torch.Tensor:
    """[2, 1, tokens, width]: the penultimate CLIP states of a blank (all-zero) input, then of the face."""
    size = encoder.config.image_size
    rgb = np.asarray(face.convert("RGB").resize((size, size), resample=3), np.float32) / 255.0  # 3: bicubic
    pixels = (rgb - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    batch = torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]
    batch = torch.cat([torch.zeros_like(batch), batch]).to(encoder.device, encoder.dtype)
    return encoder(batch, output_hidden_states=True).hidden_states[-2][:, None]


class IdentityAdapterState:
    """The one FaceID adapter a sampler holds, and what each pipeline call needs from it."""

    def __init__(self):
        self.loaded: LoadedAdapter | None = None
        self._encoder: tuple[str, object] | None = None
        self._clip: torch.Tensor | None = None  # [2, 1, tokens, width] of the current face

    def call_kwargs(self, pipe, identity: IdentityAdapter | None, cfg: float, patches) -> tuple[dict, dict]:
        """(pipeline keyword arguments, LoRA weights to set) for one call; the adapter is switched
        off (scale 0, LoRA weight 0) for a call without an identity once one has been loaded."""
        if identity is None and self.loaded is None:
            return {}, {}
        if identity is not None and (self.loaded is None or self.loaded.path != str(identity.adapter)):
            if self.loaded is not None:
                pipe.unload_ip_adapter()
            self.loaded = load_adapter(pipe, identity.adapter, patches)
        assert self.loaded is not None
        unet = pipe.unet
        guided = cfg > 1  # diffusers' own rule for classifier-free guidance
        weight = identity.weight if identity is not None else 0.0
        pipe.set_ip_adapter_scale(weight)
        vector = np.zeros(ID_EMBEDDING_DIM, np.float32) if identity is None else identity.embedding
        ids = torch.as_tensor(np.asarray(vector, np.float32).reshape(1, 1, -1))
        if guided:
            ids = torch.cat([torch.zeros_like(ids), ids])
        if self.loaded.kind == "faceid_plus":
            self._set_clip_states(pipe, identity, guided)
        loras = {self.loaded.lora_name: min(weight, 1.0)} if self.loaded.lora_name else {}
        return {"ip_adapter_image_embeds": [ids.to(unet.device, unet.dtype)]}, loras

    def _set_clip_states(self, pipe, identity: IdentityAdapter | None, guided: bool) -> None:
        layer = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        if identity is not None:
            if identity.face is None:
                raise HeadshotError("FaceID Plus needs the aligned face crop of the reference photo", "bad_option")
            folder = str(identity.image_encoder or "")
            if self._encoder is None or self._encoder[0] != folder:
                self._encoder = (
                    folder,
                    load_image_encoder(folder, identity.adapter, pipe.unet.dtype, pipe.unet.device),
                )
            self._clip = clip_face_states(self._encoder[1], identity.face)
        assert self._clip is not None  # set by the first call with an identity, which loaded the adapter
        states = self._clip if identity is not None else torch.zeros_like(self._clip)
        layer.clip_embeds = (states if guided else states[1:]).to(pipe.unet.device, pipe.unet.dtype)
        layer.shortcut = self.loaded.shortcut if self.loaded else False
