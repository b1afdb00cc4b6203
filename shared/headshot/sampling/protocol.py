"""The `Sampler` protocol: what generate and finish ask of a host's sampler, and the requests they send.

ComfyUI and A1111 already hold the model, LoRAs and samplers a person chose; their adapters
implement this protocol over them. Standalone, `diffusers_sampler.DiffusersSampler` implements it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from PIL import Image

Progress = Callable[[int, int, str], None]


@dataclass
class LoraWeight:
    path: str
    weight: float = 1.0


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


@runtime_checkable
class Sampler(Protocol):
    family: str  # "sd1" | "sd2" | "sdxl": which style variant and sizes to use

    def text_to_image(self, request: TextToImage, progress: Progress | None = None) -> Image.Image: ...

    def masked_image_to_image(self, request: MaskedImageToImage, progress: Progress | None = None) -> Image.Image: ...
