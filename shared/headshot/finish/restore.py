"""Face restoration: GFPGAN, CodeFormer or RestoreFormer weights run through spandrel.

Each detected face is aligned onto the 512x512 FFHQ face template by a similarity transform
from its two eyes, restored by the model, warped back with the inverse transform and pasted over
the photo through a feathered mask. Pixels outside the pasted faces are left exactly as they were.

Model files are the ones hosts already keep: ComfyUI's models/facerestore_models (shared by
ReActor and facerestore_cf), A1111/Forge's models/GFPGAN and models/Codeformer. spandrel reads
them (and spandrel_extra_arches adds CodeFormer); both are imported only when a model is loaded.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from ..errors import BackendUnavailable, HeadshotError
from ..faces.subject import confident_faces
from .face_warp import FACE_SIZE, align, paste, similarity  # noqa: F401  (FACE_SIZE: public here too)

#: Eye centres of the FFHQ alignment template at 512x512 (the widely published 5-point face
#: template used to align faces for FFHQ-trained restorers), image-left eye first. Only the eye
#: pair is used: two points define a similarity transform exactly.
FFHQ_EYES_512 = np.array([[192.98, 239.95], [318.90, 240.19]], np.float64)

#: files people usually have, in the folders hosts pass as `search_dirs`
KNOWN_MODEL_FILES = (
    "GFPGANv1.4.pth",
    "GFPGANv1.3.pth",
    "codeformer-v0.1.0.pth",
    "codeformer.pth",
    "RestoreFormer.pth",
)
#: the extensions spandrel reads
MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")

INSTALL_HINT = "pip install spandrel spandrel_extra_arches"


# The raw modules of these architectures are trained on images in [-1, 1] (GFPGAN and CodeFormer
# normalise with mean 0.5, std 0.5). spandrel's own call of them passes the tensor through as is,
# so we call the module ourselves. Other face models go through spandrel's [0, 1] call contract.
_SIGNED_RANGE_ARCHS = ("GFPGAN", "CodeFormer")

# state-dict keys that only CodeFormer weights have (to explain a missing spandrel_extra_arches)
_CODEFORMER_KEYS = ("position_emb", "idx_pred_layer.1.weight", "ft_layers.0.self_attn.in_proj_weight")

# words for models that are not face restorers, by spandrel architecture
_FAMILY = {"ESRGAN": "ESRGAN / Real-ESRGAN family"}


# ---------------------------------------------------------------------------------------------
# finding and loading model files


def available_restore_models(search_dirs: Iterable[str | Path] = ()) -> list[str]:
    """File names of model files (by extension) in `search_dirs`, sorted, without duplicates."""
    names: set[str] = set()
    for d in search_dirs:
        folder = Path(d).expanduser()
        if folder.is_dir():
            names.update(f.name for f in folder.iterdir() if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES)
    return sorted(names, key=str.lower)


def find_restore_model(name_or_path: str | Path, search_dirs: Iterable[str | Path] = ()) -> Path:
    """The model file `name_or_path` names: an existing path, or a file name looked up in `search_dirs`.

    A name without extension also matches `name.pth`, `.pt`, `.ckpt` and `.safetensors`; names
    match case-insensitively when no exact match exists. Hosts pass ComfyUI's
    models/facerestore_models, or A1111's models/GFPGAN and models/Codeformer.
    """
    raw = str(name_or_path).strip()
    dirs = [Path(d).expanduser() for d in search_dirs]
    if raw:
        given = Path(raw).expanduser()
        if given.is_file():
            return given
        names = [raw]
        if given.suffix.lower() not in MODEL_SUFFIXES:
            names += [raw + suffix for suffix in MODEL_SUFFIXES]
        for folder in dirs:
            for name in names:
                candidate = folder / name
                if candidate.is_file():
                    return candidate
        wanted = {name.lower() for name in names}
        for folder in dirs:
            if folder.is_dir():
                for candidate in sorted(folder.iterdir()):
                    if candidate.is_file() and candidate.name.lower() in wanted:
                        return candidate
    if dirs:
        searched = ", ".join(f"{d}{'' if d.is_dir() else ' (does not exist)'}" for d in dirs)
        present = available_restore_models(dirs)
        found = f" Model files there now: {', '.join(present)}." if present else " No model files are there now."
    else:
        searched = "no folders (none were given)"
        found = ""
    what = f"face-restoration model {raw!r} not found" if raw else "no face-restoration model was named"
    raise HeadshotError(
        f"{what}. Searched: {searched}.{found} Put one of {', '.join(KNOWN_MODEL_FILES)} in one of "
        f"those folders (ComfyUI: models/facerestore_models, the folder ReActor and facerestore_cf use; "
        f"A1111/Forge: models/GFPGAN or models/Codeformer), or give the file's full path",
        code="restore_model_missing",
    )


def _import_spandrel():
    try:
        import spandrel
    except ImportError:
        raise BackendUnavailable(f"face restoration needs spandrel: {INSTALL_HINT}") from None
    return spandrel


def _registry(spandrel) -> tuple[Any, bool]:
    """spandrel's registry plus spandrel_extra_arches' architectures (CodeFormer) when installed.

    A private copy: the host's global registry is left as it is (ComfyUI may have filled it already).
    """
    try:
        import spandrel_extra_arches
    except ImportError:
        return spandrel.MAIN_REGISTRY, False
    registry = spandrel.MAIN_REGISTRY.copy()
    # skip what the host has installed already (spandrel < 0.4 has no ignore_duplicates)
    registry.add(*[a for a in spandrel_extra_arches.EXTRA_REGISTRY if a.architecture.id not in registry])
    return registry, True


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _what_it_is(descriptor) -> str:
    name = descriptor.architecture.name
    article = "an" if name[:1].upper() in "AEIOU" else "a"
    family = f" ({_FAMILY[descriptor.architecture.id]})" if descriptor.architecture.id in _FAMILY else ""
    purpose = descriptor.purpose
    if purpose == "SR":
        return f"{article} {name} {descriptor.scale}x upscaler{family}"
    if purpose == "Restoration":
        return f"{article} {name} image-restoration model{family} (denoise / deblur / de-JPEG of whole images)"
    if purpose == "Inpainting":
        return f"{article} {name} inpainting model{family}"
    return f"{article} {name} model{family} for {purpose!r}"


def load_restore_model(path: str | Path, device: str = "cpu"):
    """A spandrel model descriptor for a face-restoration file (GFPGAN, CodeFormer, RestoreFormer).

    Raises BackendUnavailable when spandrel (or, for CodeFormer, spandrel_extra_arches) is
    missing, and HeadshotError code "not_a_restore_model" for a file that is unreadable or holds
    something else (an upscaler, say).
    """
    spandrel = _import_spandrel()
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadshotError(f"face-restoration model file {path} does not exist", code="restore_model_missing")
    registry, have_extra = _registry(spandrel)
    loader = spandrel.ModelLoader(device=device, registry=registry)
    try:
        state_dict = loader.load_state_dict_from_file(path)
    except Exception as exc:  # torch/pickle/safetensors raise many kinds
        raise HeadshotError(
            f"{path.name} cannot be read as model weights ({_short(exc)}). It may be an unfinished "
            f"download, a renamed file or not a model at all; face restoration needs GFPGAN, "
            f"CodeFormer or RestoreFormer weights ({', '.join(MODEL_SUFFIXES)})",
            code="not_a_restore_model",
        ) from exc
    keys = set(state_dict) if isinstance(state_dict, dict) else set()
    try:
        descriptor = loader.load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError:
        if all(k in keys for k in _CODEFORMER_KEYS) and not have_extra:
            raise BackendUnavailable(
                f"{path.name} holds CodeFormer weights, which spandrel reads only with its extra "
                f"architectures: pip install spandrel_extra_arches"
            ) from None
        raise HeadshotError(
            f"{path.name} is not a model architecture spandrel recognises, so it is not a face-restoration "
            f"model this tool can run (use GFPGANv1.4.pth, codeformer-v0.1.0.pth or RestoreFormer.pth)",
            code="not_a_restore_model",
        ) from None
    except Exception as exc:
        raise HeadshotError(
            f"{path.name} could not be loaded ({_short(exc)}); face restoration needs GFPGAN, "
            f"CodeFormer or RestoreFormer weights",
            code="not_a_restore_model",
        ) from exc
    if descriptor.purpose != "FaceSR":
        raise HeadshotError(
            f"{path.name}: this is {_what_it_is(descriptor)}, not a face-restoration model "
            f"(use GFPGANv1.4.pth, codeformer-v0.1.0.pth or RestoreFormer.pth)",
            code="not_a_restore_model",
        )
    descriptor.eval()
    return descriptor


# ---------------------------------------------------------------------------------------------
# running a model on one aligned face


def _forward_options(net, fidelity: float) -> dict[str, Any]:
    """Keyword arguments the module's forward names: CodeFormer's fidelity weight (`w` in the
    original code, `weight` in spandrel's copy); GFPGAN's fixed noise and no intermediate images."""
    try:
        params = inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        return {}
    options: dict[str, Any] = {}
    if "w" in params:
        options["w"] = fidelity
    elif "weight" in params:
        options["weight"] = fidelity
    if "randomize_noise" in params:
        options["randomize_noise"] = False  # the same photo restores the same way every time
    if "return_rgb" in params:
        options["return_rgb"] = False
    return options


def restore_aligned(model, face: Image.Image, fidelity: float = 0.5) -> np.ndarray:
    """Run `model` on one face already aligned to the FFHQ template: HxWx3 float32 in 0..255.

    `face` is a 512x512 RGB image. `fidelity` goes to architectures with a fidelity weight
    (CodeFormer: 0 = most restoration, 1 = closest to the input) and is ignored by the others.
    """
    import torch

    net = model.model
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    arr = np.asarray(face.convert("RGB"), np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=dtype)
    with torch.no_grad():
        if model.architecture.id in _SIGNED_RANGE_ARCHS:
            out = net(x * 2 - 1, **_forward_options(net, fidelity))
            if isinstance(out, (tuple, list)):
                out = out[0]
            y = (out.float() + 1) / 2
        else:
            y = model(x).float()  # spandrel's contract: [0, 1] in, [0, 1] out
        y = torch.nan_to_num(y, nan=0.5).clamp(0, 1)
    return (y[0].permute(1, 2, 0).cpu().numpy() * 255.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the whole photo


def restore_faces(
    image: Image.Image,
    model,
    analyzer,
    *,
    fidelity: float = 0.5,
    strength: float = 1.0,
    upscale: int = 1,
    detect_side: int | None = 2048,
) -> tuple[Image.Image, list[dict]]:
    """Restore every face `analyzer` finds in `image` with `model` (from `load_restore_model`).

    `fidelity` (0..1) is CodeFormer's weight (ignored by GFPGAN and RestoreFormer); `strength`
    (0..1) blends the restored faces with the original ones; `upscale` enlarges the whole photo
    (LANCZOS) before the faces are pasted at the larger size. Detection runs on a copy at most
    `detect_side` pixels long (None: full size); dlib finds frontal faces from about 40 px.

    Returns the new image and one dict per face: `box` (x0, y0, x1, y1 in the returned image),
    `score`, `restored` and `region` (the box of pixels blended into) or `reason`. Pixels outside the
    pasted faces are bit-identical to the input (to its LANCZOS enlargement when upscaling). No
    face: the image comes back unchanged (a copy) with an empty list; the caller reports it.
    """
    if not 0.0 <= fidelity <= 1.0:
        raise ValueError(f"fidelity {fidelity} is out of range (0–1)")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength {strength} is out of range (0–1)")
    if int(upscale) != upscale or not 1 <= upscale <= 8:
        raise ValueError(f"upscale {upscale} must be a whole number from 1 to 8")
    upscale = int(upscale)
    if getattr(model, "purpose", None) != "FaceSR":
        raise TypeError("model must be a face-restoration model from load_restore_model()")

    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    rgb = image.convert("RGB")
    if detect_side:
        from ..photos import downscaled

        small, factor = downscaled(rgb, detect_side)
    else:
        small, factor = rgb, 1.0
    # faint detections (fabric, hands) would get a face painted on them
    faces = confident_faces(analyzer.detect(np.asarray(small)))

    out_size = (rgb.width * upscale, rgb.height * upscale)
    base_img = rgb.resize(out_size, Image.Resampling.LANCZOS) if upscale > 1 else rgb
    base = np.array(base_img)  # a writable copy
    infos: list[dict] = []
    for face in faces:
        eyes = (np.asarray(face.eyes, np.float64) + 0.5) * factor  # continuous source coordinates
        box = tuple(round(float(v) * factor * upscale, 1) for v in face.box)
        info: dict[str, Any] = {"box": box, "score": float(face.score), "restored": False}
        infos.append(info)
        if np.hypot(*(eyes[1] - eyes[0])) < 2.0:
            info["reason"] = "the eye landmarks are too close together to align the face"
            continue
        if strength == 0:
            info["reason"] = "strength is 0: nothing to paste"
            continue
        template = FFHQ_EYES_512 + 0.5
        a, b = similarity(eyes, template)
        try:
            aligned = align(rgb, a, b)
        except ValueError as exc:
            info["reason"] = str(exc)
            continue
        restored = restore_aligned(model, aligned, fidelity)
        a_out, b_out = similarity(eyes * upscale, template)
        region = paste(base, restored, a_out, b_out, strength)
        info["restored"] = region is not None
        if region is None:
            info["reason"] = "the face lies outside the photo: nothing pasted"
        else:
            info["region"] = region
    result = Image.fromarray(base)
    if alpha is not None:
        result.putalpha(alpha.resize(out_size, Image.Resampling.LANCZOS) if upscale > 1 else alpha)
    return result, infos


def restoration_summary(infos: list[dict]) -> str:
    """restore_faces' per-face results in words: "2 face(s) found, 1 restored (why the other was not)"."""
    done = sum(1 for info in infos if info["restored"])
    reasons = "; ".join(sorted({info["reason"] for info in infos if "reason" in info}))
    return f"{len(infos)} face(s) found, {done} restored" + (f" ({reasons})" if reasons else "")
