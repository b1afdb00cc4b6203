"""One photo on the WebUI: an IP-Adapter FaceID unit through the ControlNet extension, beside the pose unit.

The WebUI's own preprocessor reads the face from the photo (insightface's buffalo_l, as FaceID was trained),
so the unit carries the photo itself. The preprocessor names are each host's:
  sd-webui-controlnet (A1111)  ip-adapter_face_id (FaceID) and ip-adapter_face_id_plus (Plus, Plus v2: CLIP-H too),
                               as its scripts/ipadapter/presets.py pairs them with the model files;
  Forge's lib_controlnet       "InsightFace+CLIP-H (IPAdapter)", its one FaceID preprocessor (it tells plain
                               from Plus by the model's weights).
The adapter file sits in models/ControlNet; its FaceID LoRA (<model>_lora) goes in the prompt from models/Lora,
as both hosts expect (neither applies the LoRA part of the adapter file).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from headshot.errors import HeadshotError

from . import host
from .controlnet import external_code, model_names

A1111_FACEID = "ip-adapter_face_id"
A1111_FACEID_PLUS = "ip-adapter_face_id_plus"
FORGE_FACEID = "InsightFace+CLIP-H (IPAdapter)"
FORGE_CLIP_H = "CLIP-ViT-H-14.safetensors"  # the file name that preprocessor looks for
FACEID_LORA_WEIGHT = 0.6  # the weight sd-webui-controlnet's own FaceID tests load the LoRA at
PHOTO_SIDE = 1024  # the preprocessor detects at 640 px: a larger photo only costs memory
#: best first: Plus v2 reads the face twice (ArcFace and CLIP), plain FaceID the embedding alone
PREFERENCE = ("plusv2", "plus", "faceid")

MISSING = (
    "install sd-webui-controlnet (AUTOMATIC1111; Forge has ControlNet built in) to use one photo, then put "
    "ip-adapter-faceid-plusv2_sd15 (or ip-adapter-faceid_sd15; _sdxl for SDXL) from h94/IP-Adapter-FaceID in "
    "models/ControlNet"
)
NO_MODEL = (
    "put ip-adapter-faceid-plusv2_sd15.bin (or ip-adapter-faceid_sd15.bin; the _sdxl files for SDXL) from "
    "h94/IP-Adapter-FaceID in models/ControlNet and its _lora.safetensors in models/Lora, then reload the UI, "
    "to use one photo"
)
NO_INSIGHTFACE = (
    "the FaceID preprocessor needs insightface: pip install insightface (and onnxruntime) into the WebUI's "
    "Python, then restart it; it reads buffalo_l from {where}"
)


def is_forge_code(code) -> bool:
    return "lib_controlnet" in getattr(code, "__name__", "")


def faceid_models(family: str = "sd1", code=None) -> list[str]:
    """FaceID adapters among the ControlNet models: the family's first (…sdxl… for SDXL), Plus v2 before Plus
    before plain; portrait variants and LoRAs left out (they are not one-photo adapters)."""
    found = [m for m in model_names(code) if "faceid" in m.lower()]
    found = [m for m in found if "lora" not in m.lower() and "portrait" not in m.lower()]

    def order(name: str) -> tuple[int, int]:
        low = name.lower()
        fits = ("xl" in low) == (family == "sdxl")
        return (0 if fits else 1, next(i for i, key in enumerate(PREFERENCE) if key in low))

    return sorted(found, key=order)


def preprocessor_for(model: str, code) -> str:
    if is_forge_code(code):
        return FORGE_FACEID
    return A1111_FACEID_PLUS if "plus" in model.lower() else A1111_FACEID


def preprocessors(code) -> list[str] | None:
    """The preprocessor names the host offers, or None when it gives no list."""
    if hasattr(code, "get_modules"):
        return [str(m) for m in code.get_modules()]
    state = host.module("lib_controlnet.global_state")
    if state is not None and hasattr(state, "get_all_preprocessor_names"):
        return [str(m) for m in state.get_all_preprocessor_names()]
    return None


def insightface_dir(code) -> Path:
    """Where the host's FaceID preprocessor looks for buffalo_l (Forge: models/insightface; sd-webui-controlnet:
    its annotator folder's insightface/)."""
    if is_forge_code(code):
        return host.models_dir() / "insightface"
    annotator = host.module("annotator.annotator_path")
    root = getattr(annotator, "models_path", None)
    if root:
        return Path(root) / "insightface"
    return host.data_dir() / "extensions" / "sd-webui-controlnet" / "annotator" / "downloads" / "insightface"


def faceid_lora(model: str) -> Path | None:
    """The FaceID LoRA that pairs with `model` (<its name>_lora) in the Lora folder, or None."""
    stem = model.split("[")[0].strip() + "_lora"
    return next((p for p in host.lora_files() if p.stem.lower() == stem.lower()), None)


def availability(family: str = "sd1") -> tuple[bool, str]:
    """(True, what one photo will use) or (False, what to install and where)."""
    code = external_code()
    if code is None:
        return False, MISSING
    models = faceid_models(family, code)
    if not models:
        return False, NO_MODEL
    module = preprocessor_for(models[0], code)
    offered = preprocessors(code)
    if offered is not None and module not in offered:
        return False, f"this ControlNet offers no {module} preprocessor: update the ControlNet extension"
    if importlib.util.find_spec("insightface") is None:
        return False, NO_INSIGHTFACE.format(where=insightface_dir(code) / "models" / "buffalo_l")
    lora = faceid_lora(models[0])
    return True, (
        f"one photo through ControlNet model {models[0]} ({module})"
        + (f" with {lora.stem}" if lora else f"; put {models[0].split('[')[0].strip()}_lora in models/Lora too")
        + forge_clip_note(code)
    )


def forge_clip_note(code) -> str:
    """Forge's FaceID preprocessor loads CLIP-H for plain FaceID too, downloading it when absent (offline: fails)."""
    if not is_forge_code(code) or (host.models_dir() / "ControlNetPreprocessor" / FORGE_CLIP_H).is_file():
        return ""
    return f"; Forge downloads {FORGE_CLIP_H} (2.5 GB, h94/IP-Adapter) to models/ControlNetPreprocessor at first use"


@dataclass
class FaceIDUnit:
    """A FaceID unit holding the reference photo; WebUISampler passes it with every picture and repaint."""

    code: object
    model: str
    photo: object  # numpy uint8 RGB
    weight: float = 0.8
    lora: Path | None = None

    @classmethod
    def for_photo(cls, photo: Path, family: str = "sd1", weight: float = 0.8) -> FaceIDUnit:
        """The unit for `photo`; without ControlNet or a FaceID model, a HeadshotError saying what to install."""
        import numpy as np

        from headshot.photos import downscaled, read_photo

        ok, note = availability(family)
        if not ok:
            raise HeadshotError(note, "host_feature_missing")
        if not 0 <= weight <= 2:
            raise HeadshotError(f"FaceID weight {weight}: use a value from 0 to 2 (0.6-1.0 is usual)", "bad_option")
        code = external_code()
        model = faceid_models(family, code)[0]
        image, _ = downscaled(read_photo(photo).image.convert("RGB"), PHOTO_SIDE)
        return cls(code, model, np.asarray(image, dtype=np.uint8), float(weight), faceid_lora(model))

    @property
    def module(self) -> str:
        return preprocessor_for(self.model, self.code)

    def unit(self):
        extra = {} if is_forge_code(self.code) else {"inpaint_crop_input_image": False}  # the face, not the mask's crop
        return self.code.ControlNetUnit(  # type: ignore[attr-defined]
            enabled=True,
            module=self.module,
            model=self.model,
            weight=self.weight,
            image=self.photo,
            **extra,
        )


def screen_reference(photo: Path, analyzer) -> None:
    """Refuse a reference photo prepare would refuse (no face, several faces, too small, blurry), in its words."""
    from headshot.dataset.photo_screen import examine_photo
    from headshot.dataset.prepare_settings import PrepareSettings

    screened = examine_photo(photo, photo.name, analyzer, PrepareSettings())
    if screened.rejection is not None:
        code, message = screened.rejection
        raise HeadshotError(f"reference photo refused: {message}", code)
