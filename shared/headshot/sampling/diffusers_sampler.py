"""`DiffusersSampler`: the `Sampler` protocol over diffusers, for the CLI and the service.

It loads the base model with `headshot.train.base_model_loading` (single file, diffusers folder or hub id),
the LoRAs as forward hooks (`lora_patch`, no adapter API version gates), an optional
OpenPose ControlNet, and an optional IP-Adapter FaceID identity (`identity_adapter`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..errors import HeadshotError
from ..train.base_model import diffusers_pipeline
from .protocol import LoraWeight, MaskedImageToImage, Progress, TextToImage

if TYPE_CHECKING:
    from .identity_adapter import IdentityAdapterState
    from .lora_patch import LoraPatches


def _scheduler_for(name: str, config):
    """The diffusers scheduler for one of our sampler names (the table lives with the styles)."""
    import diffusers

    from .schedulers import sampler_spec

    spec = sampler_spec(name)
    return getattr(diffusers, spec.diffusers_scheduler).from_config(
        config, steps_offset=1, **dict(spec.diffusers_kwargs)
    )


class DiffusersSampler:
    """Standalone sampling with diffusers over a base model, LoRAs and an optional ControlNet."""

    def __init__(
        self,
        base_model: str,
        *,
        controlnet: str | None = None,
        tokenizer_dirs=(),
        device: str = "auto",
        vae: str | None = None,
    ):
        import torch

        from ..devices import autocast_dtype, pick_device
        from ..train.base_model_loading import load_base_model

        self.device = pick_device(device)
        dtype = autocast_dtype(self.device, "auto") or torch.float32
        self.base = load_base_model(
            base_model, tokenizer_dirs=[Path(d) for d in tokenizer_dirs], dtype=dtype, device=self.device, vae_file=vae
        )
        self.family = self.base.family
        self.dtype = dtype
        self.controlnet = _load_controlnet(controlnet, self.base, dtype, self.device) if controlnet else None
        self._patches: LoraPatches | None = None  # made at the first LoRA
        self._identity: IdentityAdapterState | None = None  # made at the first identity adapter
        self._pipes: dict[tuple[str, str], Any] = {}  # diffusers pipelines by (kind, sampler)

    # -- pipelines share the same modules; only the wrapper differs -------------------------------
    def _pipe(self, kind: str, sampler: str):
        key = (kind, sampler)
        if key not in self._pipes:
            scheduler = _scheduler_for(sampler, self.base.noise_scheduler.config)
            extra = {"controlnet": self.controlnet} if kind == "control" else {}
            self._pipes[key] = diffusers_pipeline(self.base, kind, scheduler, **extra)
        return self._pipes[key]

    def _lora_patches(self) -> LoraPatches:
        from .lora_patch import LoraPatches

        if self._patches is None:
            self._patches = LoraPatches(self.family, self.base.unet, list(self.base.text_encoders))
        return self._patches

    def _identity_kwargs(self, pipe, request: TextToImage | MaskedImageToImage) -> tuple[dict, dict]:
        """The FaceID adapter's pipeline arguments and LoRA weight for this request (none without one)."""
        if request.identity is None and self._identity is None:
            return {}, {}
        from .identity_adapter import IdentityAdapterState

        self._identity = self._identity or IdentityAdapterState()
        return self._identity.call_kwargs(pipe, request.identity, request.cfg, self._lora_patches())

    def _apply_loras(self, pipe, loras: list[LoraWeight], extra: dict | None = None) -> None:
        """Load each LoRA file once (hooked into the shared UNet and text encoders) and set the weights;
        `extra` weights LoRAs hooked in by name (the FaceID adapter's)."""
        self._patches = self._lora_patches()
        for lora in loras:
            if not Path(lora.path).is_file():
                raise HeadshotError(
                    f"LoRA {lora.path} not found; give the .safetensors file `headshot train` wrote", "lora_missing"
                )
            self._patches.load(lora.path)
        # every pipeline wraps the same modules: the weights set here hold for all of them
        self._patches.set_weights({**{lora.path: lora.weight for lora in loras}, **(extra or {})})

    def unload_loras(self) -> None:
        """Unhook every LoRA (a long-lived service worker swaps people's LoRAs over one resident base model)."""
        if self._patches is not None:
            self._patches.remove()

    @property
    def loaded_loras(self) -> list[str]:
        return self._patches.loaded if self._patches is not None else []

    def _conditioning(self, prompt: str, negative: str) -> dict:
        """Prompt embeddings read as the hosts read prompts: long ones chunked, (text:w) weighted."""
        from .prompt_encoding import encode_prompts

        return encode_prompts(self.base, prompt, negative, self.device)

    def _callback(self, progress: Progress | None, total: int, what: str):
        if progress is None:
            return None

        def on_step(pipe, step, timestep, kwargs):
            progress(step + 1, total, what)
            return kwargs

        return on_step

    def text_to_image(self, request: TextToImage, progress: Progress | None = None) -> Image.Image:
        import torch

        from ..devices import reusing_freed_memory

        control_image = request.control_image if self.controlnet is not None else None
        pipe = self._pipe("control" if control_image is not None else "txt", request.sampler)
        extra, adapter_loras = self._identity_kwargs(pipe, request)
        self._apply_loras(pipe, request.loras, adapter_loras)
        if control_image is not None:
            extra |= {
                "image": control_image.convert("RGB").resize((request.width, request.height)),
                "controlnet_conditioning_scale": request.control_strength,
            }
        with torch.no_grad(), reusing_freed_memory(self.device):  # on the CPU the VAE's blocks are reused
            return pipe(
                **self._conditioning(request.prompt, request.negative),
                width=request.width,
                height=request.height,
                num_inference_steps=request.steps,
                guidance_scale=request.cfg,
                generator=torch.Generator().manual_seed(request.seed),
                callback_on_step_end=self._callback(progress, request.steps, "sampling"),
                **extra,
            ).images[0]

    def masked_image_to_image(self, request: MaskedImageToImage, progress: Progress | None = None) -> Image.Image:
        import torch

        from ..devices import reusing_freed_memory

        pipe = self._pipe("inpaint", request.sampler)
        extra, adapter_loras = self._identity_kwargs(pipe, request)
        self._apply_loras(pipe, request.loras, adapter_loras)
        width, height = request.image.size
        # diffusers runs steps x denoise steps: keep at least one whatever the pair
        steps = max(request.steps, math.ceil(1 / max(request.denoise, 1e-3)))
        with torch.no_grad(), reusing_freed_memory(self.device):  # on the CPU the VAE's blocks are reused
            return pipe(
                **self._conditioning(request.prompt, request.negative),
                image=request.image.convert("RGB"),
                mask_image=request.mask.convert("L"),
                width=width,
                height=height,
                strength=request.denoise,
                num_inference_steps=steps,
                guidance_scale=request.cfg,
                generator=torch.Generator().manual_seed(request.seed),
                callback_on_step_end=self._callback(progress, request.steps, "inpainting"),
                **extra,
            ).images[0]


def _load_controlnet(path: str, base, dtype, device):
    """An OpenPose ControlNet from a diffusers folder, or a single file using the base UNet's shape."""
    from diffusers import ControlNetModel

    source = Path(path)
    if source.is_dir():
        model = ControlNetModel.from_pretrained(str(source), torch_dtype=dtype, local_files_only=True)
    elif source.is_file():
        try:
            model = ControlNetModel.from_single_file(str(source), torch_dtype=dtype, local_files_only=True)
        except Exception as exc:
            raise HeadshotError(
                f"ControlNet {source.name} could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                "give a diffusers ControlNet folder (config.json + weights) for the base model's family",
                "controlnet_unreadable",
            ) from None
    else:
        raise HeadshotError(
            f"ControlNet {path} not found; give an OpenPose ControlNet file or diffusers folder", "controlnet_missing"
        )
    cross = model.config.cross_attention_dim
    if cross != base.unet.config.cross_attention_dim:
        raise HeadshotError(
            f"ControlNet {source.name} is for another model family (text width {cross}, the base "
            f"model has {base.unet.config.cross_attention_dim}); use the {base.family} OpenPose ControlNet",
            "controlnet_mismatch",
        )
    return model.to(device)
