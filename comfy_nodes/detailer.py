"""Face Detailer: the core's detailer, repainting faces with the graph's own model and samplers.

`ComfySampler` implements the core's `Sampler` protocol over what the graph already holds (its
MODEL with any LoRAs applied, positive and negative CONDITIONING, VAE): no model is loaded a
second time. `masked_image_to_image` is ComfyUI's inpainting chain in code: VAE-encode the
enlarged face crop, set the face mask as the latent's noise mask (as SetLatentNoiseMask does),
sample with comfy.sample.sample at the request's denoise (as KSampler does), VAE-decode.
"""

from __future__ import annotations

from . import host
from .common import CATEGORY, face_analyzer, face_backend_input
from .images import image_batch_to_pils, pil_to_image_batch, pil_to_mask


def model_family(model) -> str:
    """Our family name ('sd1', 'sdxl', ...) for a ComfyUI MODEL, from its config class (SD15, SDXL, ...)."""
    from headshot.families import family_for_comfyui_config

    config = getattr(getattr(model, "model", None), "model_config", None)
    return family_for_comfyui_config(type(config).__name__ if config is not None else "").name


class ComfySampler:
    """The core's Sampler protocol over a ComfyUI graph's MODEL, CONDITIONING and VAE.

    The prompts in a request are not encoded again: the graph's conditioning stands for them.
    `sampler_name` and `scheduler` are KSampler's names (the request's own sampler name is ours,
    for the standalone sampler). A request's LoRAs are applied to the model only (by file path); each
    file is read and applied once per sampler (one node run), however many faces use it.
    """

    def __init__(self, model, positive, negative, vae, sampler_name: str, scheduler: str):
        self.model, self.positive, self.negative, self.vae = model, positive, negative, vae
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.family = model_family(model)
        self._lora_files: dict[str, object] = {}  # path -> its tensors
        self._models_with: dict[tuple, object] = {}  # ((path, weight), ...) -> the model with them applied

    def text_to_image(self, request, progress=None):
        from headshot.errors import HeadshotError

        raise HeadshotError(
            "in ComfyUI pictures are drawn by the graph's own KSampler; this sampler only repaints masked regions",
            "not_supported",
        )

    def _model_with(self, loras):
        if not loras:
            return self.model
        key = tuple((lora.path, lora.weight) for lora in loras)
        if key not in self._models_with:
            sd, utils = host.module("comfy.sd"), host.module("comfy.utils")
            model = self.model
            for lora in loras:
                if lora.path not in self._lora_files:
                    self._lora_files[lora.path] = utils.load_torch_file(lora.path, safe_load=True)
                model, _ = sd.load_lora_for_models(model, None, self._lora_files[lora.path], lora.weight, 0)
            self._models_with[key] = model
        return self._models_with[key]

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
        sample = host.module("comfy.sample")
        if sample is None:
            raise RuntimeError("ComfyUI's comfy.sample is not loaded: this sampler runs inside ComfyUI")
        model = self._model_with(request.loras)
        pixels = pil_to_image_batch([request.image.convert("RGB")])
        latent = self.vae.encode(pixels[:, :, :, :3])  # as VAEEncode
        latent = sample.fix_empty_latent_channels(model, latent)
        mask = pil_to_mask(request.mask)[None]  # as SetLatentNoiseMask: [B,1,H,W]
        noise = sample.prepare_noise(latent, request.seed)
        utils = host.module("comfy.utils")
        samples = sample.sample(
            model,
            noise,
            request.steps,
            request.cfg,
            self.sampler_name,
            self.scheduler,
            self.positive,
            self.negative,
            latent,
            denoise=request.denoise,
            noise_mask=mask,
            callback=self._callback(model, request.steps, progress),
            disable_pbar=not getattr(utils, "PROGRESS_BAR_ENABLED", True),
            seed=request.seed,
        )
        images = self.vae.decode(samples)  # as VAEDecode
        if images.ndim == 5:
            images = images.reshape(-1, *images.shape[-3:])
        return image_batch_to_pils(images)[0]


class HeadshotFaceDetailer:
    DESCRIPTION = (
        "Repaints faces larger and pastes them back through a mask feathered inside the face, using "
        "the graph's MODEL (with the identity LoRA), prompts and VAE with ComfyUI's samplers. Pixels "
        "outside the face regions stay exactly as they were. For a group photo, chain one detailer "
        "per person, each with that person's LoRA model and 'nth from left'."
    )

    @classmethod
    def INPUT_TYPES(cls):
        from headshot.finish.detailer import FACE_CHOICES

        samplers, schedulers = host.sampler_names()
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The pictures whose faces are repainted."}),
                "model": (
                    "MODEL",
                    {
                        "tooltip": "The model to repaint with: the checkpoint with the identity LoRA "
                        "applied (LoraLoader's MODEL)."
                    },
                ),
                "positive": (
                    "CONDITIONING",
                    {"tooltip": "Positive conditioning for the faces (the subject's prompt)."},
                ),
                "negative": ("CONDITIONING", {"tooltip": "Negative conditioning."}),
                "vae": ("VAE", {"tooltip": "The VAE that encodes the face crops and decodes them again."}),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "Noise seed; face i of picture b uses seed + b + i.",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 20,
                        "min": 1,
                        "max": 1000,
                        "tooltip": "Sampling steps (the scheduler's full count; denoise takes the last part of it).",
                    },
                ),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 5.0,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Classifier-free guidance scale.",
                    },
                ),
                "sampler_name": (samplers, {"default": "dpmpp_2m", "tooltip": "ComfyUI sampler."}),
                "scheduler": (schedulers, {"default": "karras", "tooltip": "ComfyUI scheduler."}),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 0.4,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "How much of each face is repainted: low keeps the structure, high invents more.",
                    },
                ),
                "guide_size": (
                    "INT",
                    {
                        "default": 512,
                        "min": 256,
                        "max": 2048,
                        "step": 64,
                        "tooltip": "Faces are "
                        "repainted at this size (the model's native size works best), then shrunk "
                        "back.",
                    },
                ),
                "faces": (
                    list(FACE_CHOICES),
                    {
                        "default": "largest",
                        "tooltip": "Which faces: the person (the "
                        "largest clear face), all clear faces, or the face_index-th from the left (group photos, "
                        "one detailer per person). Faint detections (fabric, hands) are never repainted.",
                    },
                ),
                "face_index": (
                    "INT",
                    {"default": 0, "min": 0, "max": 63, "tooltip": "For 'nth from left': 0 is the leftmost face."},
                ),
                "face_backend": face_backend_input(),
            },
            "optional": {
                "context": (
                    "FLOAT",
                    {
                        "default": 1.8,
                        "min": 1.0,
                        "max": 4.0,
                        "step": 0.05,
                        "tooltip": "Crop side as a multiple of the face's size (more context, more coherent).",
                    },
                ),
                "dilation": (
                    "FLOAT",
                    {
                        "default": 1.25,
                        "min": 1.0,
                        "max": 2.0,
                        "step": 0.05,
                        "tooltip": "The repainted region: the face box grown by this factor (an ellipse).",
                    },
                ),
                "feather": (
                    "FLOAT",
                    {
                        "default": 0.08,
                        "min": 0.0,
                        "max": 0.5,
                        "step": 0.01,
                        "tooltip": "Share of the region over which the paste fades in (inside the region only).",
                    },
                ),
                # new widgets go last: saved workflows list widget values by position
                "lora_name": (
                    ["none"] + host.file_list("loras"),
                    {
                        "default": "none",
                        "tooltip": "A LoRA applied "
                        "to the repainted faces only (e.g. the identity LoRA when the MODEL lacks it); its "
                        "file is read once per run, however many faces use it.",
                    },
                ),
                "lora_strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -10.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "Strength of lora_name on the model (as LoraLoader's strength_model).",
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "report")
    OUTPUT_TOOLTIPS = ("The pictures with their faces repainted.", "Faces found and repainted per picture.")
    FUNCTION = "detail"
    CATEGORY = f"{CATEGORY}/finish"

    def detail(
        self,
        image,
        model,
        positive,
        negative,
        vae,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        denoise: float,
        guide_size: int,
        faces: str,
        face_index: int,
        face_backend: str,
        context: float = 1.8,
        dilation: float = 1.25,
        feather: float = 0.08,
        lora_name: str = "none",
        lora_strength: float = 1.0,
    ):
        from headshot.finish.detailer import DetailerSettings, detail_picture
        from headshot.sampling.protocol import LoraWeight

        analyzer = face_analyzer(face_backend)
        sampler = ComfySampler(model, positive, negative, vae, sampler_name, scheduler)
        settings = DetailerSettings(
            denoise=denoise,
            guide_size=guide_size,
            context=context,
            dilation=dilation,
            feather=feather,
            steps=steps,
            cfg=cfg,
        )
        loras = [LoraWeight(str(host.full_path("loras", lora_name)), lora_strength)] if lora_name != "none" else []
        out, lines = [], []
        for b, picture in enumerate(image_batch_to_pils(image)):
            host.raise_if_interrupted()
            seed_b = (seed + b) % (2**64 - 64)  # face i adds i: stay below ComfyUI's seed limit
            picture, found, done = detail_picture(
                picture, analyzer, sampler, seed=seed_b, choice=faces, index=face_index, settings=settings, loras=loras
            )
            lines.append(f"picture {b + 1}: {found} face(s) found, {len(done)} repainted")
            out.append(picture)
        return (pil_to_image_batch(out), "\n".join(lines))
