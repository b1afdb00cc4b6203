"""kohya LoRAs applied to live diffusers/transformers modules by forward hooks, with per-LoRA weights.

Why not diffusers' `load_lora_weights`: for text-encoder weights it calls transformers' own adapter API,
which refuses to run unless the installed peft is at least the version that transformers release wants
(transformers 5.24 asks for a peft that did not exist yet). A hook needs neither: the base weights stay
untouched, each adapted module gets `weight * alpha / rank * up(down(x))` added to its output, the way
ComfyUI and A1111 apply LoRAs. Every key of a file must find its module, or loading fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import HeadshotError


@dataclass
class _Delta:
    lora: str  # the file it came from
    down: torch.Tensor
    up: torch.Tensor
    scale: float  # alpha / rank


@dataclass
class LoraPatches:
    """LoRA files hooked into `unet` and `text_encoders` (te, or te1/te2 for SDXL) of one base model."""

    family: str
    unet: nn.Module
    text_encoders: list[nn.Module]
    weights: dict[str, float] = field(default_factory=dict)  # file -> weight; 0 switches it off
    _deltas: dict[nn.Module, list[_Delta]] = field(default_factory=dict)
    _hooks: dict[nn.Module, RemovableHandle] = field(default_factory=dict)

    @property
    def loaded(self) -> list[str]:
        return list(self.weights)

    def load(self, path: str | Path) -> int:
        """Hook every module of the file in (weight 0 until `set_weights`); returns the number of modules."""
        from ..train.lora_conversion import kohya_to_peft
        from ..train.lora_files import load_lora

        path = str(path)
        if path in self.weights:
            return 0
        tensors, _ = load_lora(path)
        states, alphas = kohya_to_peft(self.family, tensors, self.unet, self.text_encoders)
        models = {"unet": self.unet, **_text_encoder_map(self.family, self.text_encoders)}
        count = 0
        for component, state in states.items():
            for key, down in state.items():
                if not key.endswith(".lora_A.weight"):
                    continue
                name = key[: -len(".lora_A.weight")]
                module = models[component].get_submodule(name)
                up = state[f"{name}.lora_B.weight"]
                ref = module.weight
                assert isinstance(ref, torch.Tensor)  # LoRAs target Linear and Conv layers, which have one
                delta = _Delta(
                    path,
                    _shape_for(module, down).to(ref.device, ref.dtype),
                    _shape_for(module, up, up=True).to(ref.device, ref.dtype),
                    alphas[f"{component}.{name}"] / down.shape[0],
                )
                self._hook(module, delta)
                count += 1
        self.weights[path] = 0.0
        return count

    def add_layers(self, name: str, pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> int:
        """Hook in LoRA pairs given by UNet layer name, {layer: (down, up, scale)}, under `name` (weight 0
        until `set_weights`): IP-Adapter FaceID's LoRA, which comes inside the adapter file."""
        if name in self.weights:
            return 0
        for layer, (down, up, scale) in pairs.items():
            module = self.unet.get_submodule(layer)
            ref = module.weight
            assert isinstance(ref, torch.Tensor)
            self._hook(module, _Delta(name, down.to(ref.device, ref.dtype), up.to(ref.device, ref.dtype), scale))
        self.weights[name] = 0.0
        return len(pairs)

    def _hook(self, module: nn.Module, delta: _Delta) -> None:
        self._deltas.setdefault(module, []).append(delta)
        if module not in self._hooks:
            self._hooks[module] = module.register_forward_hook(self._add_deltas)

    def set_weights(self, weights: dict[str, float]) -> None:
        """The weight of each loaded file; files not named are switched off."""
        unknown = [p for p in weights if p not in self.weights]
        if unknown:
            raise HeadshotError(f"LoRA {unknown[0]} is not loaded", "lora_missing")
        self.weights = {p: float(weights.get(p, 0.0)) for p in self.weights}

    def remove(self) -> None:
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()
        self._deltas.clear()
        self.weights.clear()

    def _add_deltas(self, module: nn.Module, args, output):
        x = args[0]
        for delta in self._deltas.get(module, ()):
            weight = self.weights.get(delta.lora, 0.0)
            if weight:
                output = output + (weight * delta.scale) * _forward(module, x, delta)
        return output


def _text_encoder_map(family: str, text_encoders: list[nn.Module]) -> dict[str, nn.Module]:
    from ..families import get_family

    return dict(zip(get_family(family).text_components, text_encoders))


def _shape_for(module: nn.Module, weight: torch.Tensor, up: bool = False) -> torch.Tensor:
    """Linear weights as matrices, Conv2d weights as 4-d kernels (a 1x1 conv may be stored either way)."""
    if isinstance(module, nn.Linear):
        return weight.reshape(weight.shape[0], -1) if weight.ndim == 4 else weight
    if weight.ndim == 2:
        return weight[:, :, None, None]
    return weight


def _forward(module: nn.Module, x: torch.Tensor, delta: _Delta) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        hidden = F.conv2d(x, delta.down, stride=module.stride, padding=module.padding, dilation=module.dilation)
        return F.conv2d(hidden, delta.up)
    return F.linear(F.linear(x, delta.down), delta.up)
