"""Face Detailer: the core's detailer, repainting faces with the graph's own model and samplers.

`ComfySampler` implements the core's `Sampler` protocol over what the graph already holds (its
MODEL with any LoRAs applied, positive and negative CONDITIONING, VAE): no model is loaded a
second time. `masked_image_to_image` is ComfyUI's inpainting chain in code: VAE-encode the
enlarged face crop, set the face mask as the latent's noise mask (as SetLatentNoiseMask does),
sample with comfy.sample.sample at the request's denoise (as KSampler does), VAE-decode.
"""
from __future__ import annotations

from . import host
from .common import CATEGORY, face_backend_input, face_analyzer
from .images import image_batch_to_pils, pil_to_image_batch

FACE_CHOICES = ["largest", "all", "nth from left"]


def model_family(model) -> str:
    """'sd1' | 'sd2' | 'sdxl' from a ComfyUI MODEL's config class (SD15, SD20, SDXL, ...)."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    name = type(config).__name__ if config is not None else ""
    if name.startswith("SDXL") or name in ("SSD1B", "Segmind_Vega", "KOALA_700M", "KOALA_1B"):
        return "sdxl"
    if name.startswith("SD2"):
        return "sd2"
    return "sd1"


class ComfySampler:
    """The core's Sampler protocol over a ComfyUI graph's MODEL, CONDITIONING and VAE.

    The prompts in a request are not encoded again: the graph's conditioning stands for them.
    `sampler_name` and `scheduler` are KSampler's names (the request's own sampler name is ours,
    for the standalone sampler). A request's LoRAs are applied to the model only (by file path).
    """

    def __init__(self, model, positive, negative, vae, sampler_name: str, scheduler: str):
        self.model, self.positive, self.negative, self.vae = model, positive, negative, vae
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.family = model_family(model)

    def text_to_image(self, request, progress=None):
        from headshot.errors import HeadshotError

        raise HeadshotError("in ComfyUI pictures are drawn by the graph's own KSampler; this sampler only repaints "
                            "masked regions", "not_supported")

    def _model_with(self, loras):
        if not loras:
            return self.model
        sd, utils = host.module("comfy.sd"), host.module("comfy.utils")
        model = self.model
        for lora in loras:
            weights = utils.load_torch_file(lora.path, safe_load=True)
            model, _ = sd.load_lora_for_models(model, None, weights, lora.weight, 0)
        return model

    def _callback(self, model, steps: int, progress):
        preview = host.module("latent_preview")
        comfy_callback = preview.prepare_callback(model, steps) if preview is not None else None

        def callback(step, x0, x, total_steps):
            host.raise_if_interrupted()
            if comfy_callback is not None:
                comfy_callback(step, x0, x, total_steps)
            if progress is not None:
                progress(step + 1, total_steps, "repainting a face")

        return callback

    def masked_image_to_image(self, request, progress=None):
        import torch

        sample = host.module("comfy.sample")
        if sample is None:
            raise RuntimeError("ComfyUI's comfy.sample is not loaded: this sampler runs inside ComfyUI")
        model = self._model_with(request.loras)
        pixels = pil_to_image_batch([request.image.convert("RGB")])
        latent = self.vae.encode(pixels[:, :, :, :3])  # as VAEEncode
        latent = sample.fix_empty_latent_channels(model, latent)
        mask = torch.from_numpy(_mask_array(request.mask))[None, None]  # as SetLatentNoiseMask: [B,1,H,W]
        noise = sample.prepare_noise(latent, request.seed)
        utils = host.module("comfy.utils")
        samples = sample.sample(model, noise, request.steps, request.cfg, self.sampler_name, self.scheduler,
                                self.positive, self.negative, latent, denoise=request.denoise, noise_mask=mask,
                                callback=self._callback(model, request.steps, progress),
                                disable_pbar=not getattr(utils, "PROGRESS_BAR_ENABLED", True), seed=request.seed)
        images = self.vae.decode(samples)  # as VAEDecode
        if images.ndim == 5:
            images = images.reshape(-1, *images.shape[-3:])
        return image_batch_to_pils(images)[0]


def _mask_array(mask):
    import numpy as np

    return (np.asarray(mask.convert("L"), dtype=np.float32) / 255.0).copy()


def pick_faces(faces: list, mode: str, index: int) -> list:
    """The faces to repaint: the largest (the detector's first), all, or the index-th from the left."""
    if mode == "all":
        return list(faces)
    if mode == "nth from left":
        ordered = sorted(faces, key=lambda f: f.center[0])
        return [ordered[index]] if 0 <= index < len(ordered) else []
    return list(faces[:1])


class HeadshotFaceDetailer:
    DESCRIPTION = ("Repaints faces larger and pastes them back through a mask feathered inside the face, using "
                   "the graph's MODEL (with the identity LoRA), prompts and VAE with ComfyUI's samplers. Pixels "
                   "outside the face regions stay exactly as they were. For a group photo, chain one detailer "
                   "per person, each with that person's LoRA model and 'nth from left'.")

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = host.sampler_names()
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The pictures whose faces are repainted."}),
                "model": ("MODEL", {"tooltip": "The model to repaint with: the checkpoint with the identity LoRA "
                                    "applied (LoraLoader's MODEL)."}),
                "positive": ("CONDITIONING", {"tooltip": "Positive conditioning for the faces (the subject's "
                                              "prompt)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative conditioning."}),
                "vae": ("VAE", {"tooltip": "The VAE that encodes the face crops and decodes them again."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Noise seed; face i of picture b uses seed + b + i."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": "Sampling steps (the "
                                  "scheduler's full count; denoise takes the last part of it)."}),
                "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale."}),
                "sampler_name": (samplers, {"default": "dpmpp_2m", "tooltip": "ComfyUI sampler."}),
                "scheduler": (schedulers, {"default": "karras", "tooltip": "ComfyUI scheduler."}),
                "denoise": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "How much "
                                      "of each face is repainted: low keeps the structure, high invents more."}),
                "guide_size": ("INT", {"default": 512, "min": 256, "max": 2048, "step": 64, "tooltip": "Faces are "
                                       "repainted at this size (the model's native size works best), then shrunk "
                                       "back."}),
                "faces": (FACE_CHOICES, {"default": "largest", "tooltip": "Which faces: the largest, all, or the "
                                         "face_index-th from the left (group photos, one detailer per person)."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 63, "tooltip": "For 'nth from left': 0 is "
                                       "the leftmost face."}),
                "face_backend": face_backend_input(),
            },
            "optional": {
                "context": ("FLOAT", {"default": 1.8, "min": 1.0, "max": 4.0, "step": 0.05, "tooltip": "Crop side "
                                      "as a multiple of the face's size (more context, more coherent)."}),
                "dilation": ("FLOAT", {"default": 1.25, "min": 1.0, "max": 2.0, "step": 0.05, "tooltip": "The "
                                       "repainted region: the face box grown by this factor (an ellipse)."}),
                "feather": ("FLOAT", {"default": 0.08, "min": 0.0, "max": 0.5, "step": 0.01, "tooltip": "Share of "
                                      "the region over which the paste fades in (inside the region only)."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "report")
    OUTPUT_TOOLTIPS = ("The pictures with their faces repainted.", "Faces found and repainted per picture.")
    FUNCTION = "detail"
    CATEGORY = f"{CATEGORY}/finish"

    def detail(self, image, model, positive, negative, vae, seed: int, steps: int, cfg: float, sampler_name: str,
               scheduler: str, denoise: float, guide_size: int, faces: str, face_index: int, face_backend: str,
               context: float = 1.8, dilation: float = 1.25, feather: float = 0.08):
        import numpy as np
        from headshot.faces.subject import confident_faces
        from headshot.finish.detailer import DetailerSettings, detail_faces

        analyzer = face_analyzer(face_backend)
        sampler = ComfySampler(model, positive, negative, vae, sampler_name, scheduler)
        settings = DetailerSettings(denoise=denoise, guide_size=guide_size, context=context, dilation=dilation,
                                    feather=feather, steps=steps, cfg=cfg)
        out, lines = [], []
        for b, picture in enumerate(image_batch_to_pils(image)):
            host.raise_if_interrupted()
            found = confident_faces(analyzer.detect(np.asarray(picture)))  # faint hits are fabric, hands
            chosen = pick_faces(found, faces, face_index)
            if chosen:
                seed_b = (seed + b) % (2**64 - 64)  # face i adds i: stay below ComfyUI's seed limit
                picture, done = detail_faces(picture, chosen, sampler, "", "", seed=seed_b, settings=settings)
            lines.append(f"picture {b + 1}: {len(found)} face(s) found, {len(chosen)} repainted")
            out.append(picture)
        return (pil_to_image_batch(out), "\n".join(lines))
