"""Face detailer: repaint each face at a working resolution and paste it back invisibly.

Per face: crop a square around it with context, enlarge to `guide_size`, masked
image-to-image over the dilated face region at `denoise` (with the identity LoRA), shrink back,
and paste through a mask feathered *inside* the dilated region. Outside that region the weight
is exactly zero, so those pixels stay bit-identical to the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import HeadshotError
from ..faces.base import Face
from ..faces.subject import confident_faces, pick_subject
from ..sampling.protocol import LoraWeight, MaskedImageToImage, Sampler

#: which faces to repaint: the person (the subject rule of faces.subject), every face, or one by position
FACE_CHOICES = ("largest", "all", "nth from left")


@dataclass
class DetailerSettings:
    denoise: float = 0.4
    guide_size: int = 512  # faces are repainted at this size, then shrunk back
    context: float = 1.8  # crop side as a multiple of the face's larger side
    dilation: float = 1.25  # mask: the face box grown by this factor (an ellipse)
    feather: float = 0.08  # share of the mask's size over which the paste fades in
    steps: int = 20
    cfg: float = 5.0
    sampler: str = "dpmpp_2m"


@dataclass
class DetailedFace:
    box: tuple[float, float, float, float]
    crop: tuple[int, int, int, int]
    loras: list[str] = field(default_factory=list)


def face_mask(size: tuple[int, int], face: Face, dilation: float) -> Image.Image:
    """The dilated face region (an ellipse around the grown box) as a binary L mask."""
    cx, cy = face.center
    half_w, half_h = face.width * dilation / 2, face.height * dilation / 2
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=255)
    return mask


def _crop_box(face: Face, image_size: tuple[int, int], context: float) -> tuple[int, int, int, int]:
    side = max(face.width, face.height) * context
    side = min(side, *image_size)
    cx, cy = face.center
    left = int(round(min(max(cx - side / 2, 0), image_size[0] - side)))
    top = int(round(min(max(cy - side / 2, 0), image_size[1] - side)))
    side = int(round(side))
    return left, top, left + side, top + side


def paste_feathered(original: Image.Image, repainted: Image.Image, mask: Image.Image, feather_px: float) -> Image.Image:
    """Blend `repainted` into `original` with `mask` softened inwards: zero weight outside the mask."""
    hard = np.asarray(mask, np.float32) / 255.0
    if feather_px > 0:
        # erode then blur: the soft edge lies inside the mask, never outside it
        eroded = mask.filter(ImageFilter.MinFilter(max(3, int(feather_px) | 1)))
        soft = np.asarray(eroded.filter(ImageFilter.GaussianBlur(feather_px / 2)), np.float32) / 255.0
        weight = np.minimum(soft, hard)
    else:
        weight = hard
    base = np.asarray(original.convert("RGB"))
    new = np.asarray(repainted.convert("RGB").resize(original.size, Image.Resampling.LANCZOS))
    blended = base * (1 - weight[..., None]) + new * weight[..., None]
    out = np.where(weight[..., None] > 0, np.clip(blended + 0.5, 0, 255).astype(np.uint8), base)
    return Image.fromarray(out)


def detail_faces(
    image: Image.Image,
    faces: list[Face],
    sampler: Sampler,
    prompt: str,
    negative: str,
    *,
    seed: int,
    settings: DetailerSettings | None = None,
    loras_per_face: list[list[LoraWeight]] | None = None,
    progress=None,
) -> tuple[Image.Image, list[DetailedFace]]:
    """Repaint `faces` of `image` one by one; `loras_per_face[i]` applies to face i (group photos)."""
    settings = settings or DetailerSettings()
    result = image.convert("RGB")
    done = []
    for i, face in enumerate(faces):
        box = _crop_box(face, result.size, settings.context)
        crop = result.crop(box)
        local = Face(
            box=(face.box[0] - box[0], face.box[1] - box[1], face.box[2] - box[0], face.box[3] - box[1]),
            score=face.score,
            eyes=face.eyes - np.array(box[:2]),
        )
        mask = face_mask(crop.size, local, settings.dilation)
        guide = settings.guide_size
        loras = loras_per_face[i] if loras_per_face else []
        repainted = sampler.masked_image_to_image(
            MaskedImageToImage(
                image=crop.resize((guide, guide), Image.Resampling.LANCZOS),
                mask=mask.resize((guide, guide), Image.Resampling.NEAREST),
                prompt=prompt,
                negative=negative,
                steps=settings.steps,
                cfg=settings.cfg,
                seed=seed + i,
                denoise=settings.denoise,
                sampler=settings.sampler,
                loras=loras,
            ),
            progress,
        )
        # the paste mask lives in full-image coordinates: nothing outside it can change
        full_mask = Image.new("L", result.size, 0)
        full_mask.paste(mask, box[:2])
        canvas = result.copy()
        canvas.paste(repainted.resize(crop.size, Image.Resampling.LANCZOS), box[:2])
        result = paste_feathered(result, canvas, full_mask, settings.feather * crop.size[0])
        x0, y0, x1, y1 = face.box
        done.append(DetailedFace((x0, y0, x1, y1), box, [lora.path for lora in loras]))
    return result, done


def choose_faces(faces: list[Face], choice: str = "largest", index: int = 0) -> list[Face]:
    """The faces to repaint. Faint detections (fabric, hands) are never chosen; "largest" is the
    subject as prepare, training and ranking pick it; "nth from left" counts from 0."""
    if choice == "largest":
        subject, _ = pick_subject(faces)
        return [subject] if subject is not None else []
    if choice == "all":
        return confident_faces(faces)
    if choice == "nth from left":
        ordered = sorted(confident_faces(faces), key=lambda f: f.center[0])
        return [ordered[index]] if 0 <= index < len(ordered) else []
    raise HeadshotError(f"unknown face choice {choice!r}; choose one of {', '.join(FACE_CHOICES)}", "bad_option")


def detail_picture(
    image: Image.Image,
    analyzer,
    sampler: Sampler,
    *,
    seed: int,
    choice: str = "largest",
    index: int = 0,
    settings: DetailerSettings | None = None,
    loras: Sequence[LoraWeight] = (),
    prompt: str = "",
    negative: str = "",
    progress=None,
) -> tuple[Image.Image, int, list[DetailedFace]]:
    """Find the faces, repaint the chosen ones (each with `loras`); (picture, faces found, faces repainted)."""
    found = confident_faces(analyzer.detect(np.asarray(image.convert("RGB"))))
    chosen = choose_faces(found, choice, index)
    if not chosen:
        return image, len(found), []
    image, done = detail_faces(
        image,
        chosen,
        sampler,
        prompt,
        negative,
        seed=seed,
        settings=settings,
        loras_per_face=[list(loras)] * len(chosen),
        progress=progress,
    )
    return image, len(found), done
