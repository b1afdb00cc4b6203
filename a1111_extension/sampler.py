"""`WebUISampler`: the core's Sampler protocol over the WebUI's own modules.processing.

Pictures are made by the WebUI itself, so its samplers, VAE, LoRA loader (`<lora:NAME:W>` in the
prompt), ControlNet extension and infotext apply. generate and finish (headshot.photoshoot,
headshot.finish) call this exactly as they call ComfyUI's or diffusers' sampler.
"""

from __future__ import annotations

from pathlib import Path

from headshot.errors import HeadshotError
from headshot.sampling.protocol import LoraWeight, MaskedImageToImage, Progress, TextToImage

from . import host

#: img2img inpainting: repaint the mask's area at full resolution ("only masked"), keep the rest
MASK_BLUR = 4
MASKED_PADDING = 32
FILL_ORIGINAL = 1  # inpainting_fill: start from the picture's own pixels (the detailer's denoise decides how much)


def lora_prompt(prompt: str, loras: list[LoraWeight]) -> str:
    """`prompt` with `<lora:NAME:W>` for each LoRA: NAME is the file's stem, as the WebUI's Lora list names it."""
    tags = [f"<lora:{Path(lora.path).stem}:{lora.weight:g}>" for lora in loras]
    return ", ".join([p for p in [prompt.strip()] if p] + tags)


def _processing():
    processing = host.module("modules.processing")
    if processing is None:
        raise HeadshotError(
            "the WebUI's modules.processing is not loaded: pictures are drawn only inside a running "
            "AUTOMATIC1111 or Forge",
            "host_feature_missing",
        )
    return processing


def _multiple_of_8(value: int) -> int:
    return max(64, int(value) // 8 * 8)


class WebUISampler:
    """Implements headshot.sampling.protocol.Sampler with the WebUI's txt2img and img2img."""

    def __init__(self, family: str | None = None, control_unit=None, save_pictures: bool = True, identity_unit=None):
        self.family = family or host.model_family()
        #: builds the ControlNet arguments for a skeleton (controlnet.OpenPoseUnit), or None: no pose control
        self.control_unit = control_unit
        #: one photo (identity_adapter.FaceIDUnit): on every picture and detailer repaint, beside the pose
        self.identity_unit = identity_unit
        self.save_pictures = save_pictures  # the WebUI also keeps its own copy (with infotext) in txt2img-images

    def _loras(self, loras: list[LoraWeight]) -> list[LoraWeight]:
        """The request's LoRAs, and the FaceID LoRA when one photo is on and its file is in models/Lora."""
        unit = self.identity_unit
        if unit is None or unit.lora is None:
            return loras
        from .identity_adapter import FACEID_LORA_WEIGHT

        return [*loras, LoraWeight(str(unit.lora), FACEID_LORA_WEIGHT)]

    def _attach(self, p, pose_unit=None, is_img2img: bool = False) -> None:
        from .controlnet import attach_units

        units = [u for u in (pose_unit, self.identity_unit.unit() if self.identity_unit else None) if u is not None]
        code = (self.identity_unit or self.control_unit).code if units else None
        attach_units(p, code, units, is_img2img)

    def _common(self, request, prompt: str) -> dict:
        from headshot.sampling.schedulers import a1111_sampler

        sampler_name, scheduler = a1111_sampler(request.sampler)
        sh = host.shared()
        return {
            "sd_model": getattr(sh, "sd_model", None),
            "prompt": prompt,
            "negative_prompt": request.negative,
            "seed": int(request.seed),
            "sampler_name": sampler_name,
            "scheduler": scheduler,
            "steps": int(request.steps),
            "cfg_scale": float(request.cfg),
            "batch_size": 1,
            "n_iter": 1,
        }

    def txt2img_processing(self, request: TextToImage):
        """The StableDiffusionProcessingTxt2Img for `request` (ControlNet attached when a skeleton is given)."""
        processing = _processing()
        p = processing.StableDiffusionProcessingTxt2Img(
            **self._common(request, lora_prompt(request.prompt, self._loras(request.loras))),
            width=_multiple_of_8(request.width),
            height=_multiple_of_8(request.height),
            outpath_samples=host.txt2img_dir(),
            do_not_save_samples=not self.save_pictures,
            do_not_save_grid=True,
        )
        pose = None
        if request.control_image is not None and self.control_unit is not None:
            pose = self.control_unit.unit(request.control_image, request.control_strength)
        self._attach(p, pose)
        return p

    def img2img_processing(self, request: MaskedImageToImage):
        """The StableDiffusionProcessingImg2Img that inpaints the mask's area of `request.image`."""
        processing = _processing()
        image = request.image.convert("RGB")
        p = processing.StableDiffusionProcessingImg2Img(
            **self._common(request, lora_prompt(request.prompt, self._loras(request.loras))),
            init_images=[image],
            mask=request.mask.convert("L"),
            mask_blur=MASK_BLUR,
            inpainting_fill=FILL_ORIGINAL,
            inpaint_full_res=True,
            inpaint_full_res_padding=MASKED_PADDING,
            inpainting_mask_invert=0,
            denoising_strength=float(request.denoise),
            resize_mode=0,
            width=_multiple_of_8(image.width),
            height=_multiple_of_8(image.height),
            do_not_save_samples=True,  # a face crop on its way back into a picture
            do_not_save_grid=True,
        )
        self._attach(p, is_img2img=True)
        return p

    def _run(self, p, progress: Progress | None):
        processing = _processing()
        try:
            processed = processing.process_images(p)
        finally:
            close = getattr(p, "close", None)
            if callable(close):
                close()
        if host.interrupted():
            raise HeadshotError("stopped: the WebUI's Interrupt was pressed", "cancelled")
        images = list(getattr(processed, "images", None) or [])
        if not images:
            raise HeadshotError(
                "the WebUI returned no picture (see its console for the reason)", "host_feature_missing"
            )
        if progress is not None:
            progress(int(p.steps), int(p.steps), "picture done")
        return images[0].convert("RGB")

    def text_to_image(self, request: TextToImage, progress: Progress | None = None):
        return self._run(self.txt2img_processing(request), progress)

    def masked_image_to_image(self, request: MaskedImageToImage, progress: Progress | None = None):
        image = self._run(self.img2img_processing(request), progress)
        if image.size != request.image.size:  # the WebUI works in multiples of 8; the detailer pastes by size
            image = image.resize(request.image.size)
        return image
