"""The `Sampler` protocol: what generate and finish ask of a host's sampler, and the requests they send.

ComfyUI and A1111 already hold the model, LoRAs and samplers a person chose; their adapters
implement this protocol over them. Standalone, `diffusers_sampler.DiffusersSampler` implements it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np
from PIL import Image

Progress = Callable[[int, int, str], None]


@dataclass
class LoraWeight:
    path: str
    weight: float = 1.0


@dataclass
class IdentityAdapter:
    """A face identity drawn in by IP-Adapter FaceID (one photo, no training), alone or beside a LoRA.

    Made by `sampling.identity_reference.identity_from_photo`; a request that carries it is drawn with
    the adapter, and so is every detailer repaint of the same batch.
    """

    adapter: str  # the FaceID file (.safetensors, or a .bin read as tensors only)
    embedding: np.ndarray  # the reference face's 512-d ArcFace embedding (insightface w600k_r50)
    face: Image.Image | None = None  # the aligned face crop, for FaceID Plus's CLIP image embedding
    weight: float = 0.8  # the adapter's attention scale (its LoRA follows it, capped at 1)
    image_encoder: str | None = None  # CLIP vision folder (FaceID Plus only)


@dataclass
class TextToImage:
    prompt: str
    negative: str
    width: int
    height: int
    steps: int
    cfg: float
    seed: int
    sampler: str = "dpmpp_2m"
    loras: list[LoraWeight] = field(default_factory=list)
    control_image: Image.Image | None = None  # an OpenPose skeleton, used when the sampler has a ControlNet
    control_strength: float = 1.0
    identity: IdentityAdapter | None = None


@dataclass
class MaskedImageToImage:
    """Repaint the white part of `mask` in `image`; `denoise` 0 keeps it, 1 repaints from noise."""

    image: Image.Image
    mask: Image.Image
    prompt: str
    negative: str
    steps: int
    cfg: float
    seed: int
    denoise: float = 0.4
    sampler: str = "dpmpp_2m"
    loras: list[LoraWeight] = field(default_factory=list)
    identity: IdentityAdapter | None = None


@runtime_checkable
class Sampler(Protocol):
    family: str  # "sd1" | "sd2" | "sdxl": which style variant and sizes to use

    def text_to_image(self, request: TextToImage, progress: Progress | None = None) -> Image.Image: ...

    def masked_image_to_image(self, request: MaskedImageToImage, progress: Progress | None = None) -> Image.Image: ...
