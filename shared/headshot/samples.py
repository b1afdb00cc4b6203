"""Sample photos built from real photos that ship inside installed packages (no download).

scikit-image ships NASA's portrait of astronaut Eileen Collins; the insightface wheel ships a
group photo, a portrait of Tom Hanks and photos of people in face masks. From them we make a
folder like the ones people drop in: several different shots of one person, other people, a group
photo and junk. The shots of one person are different crops, mirrorings and turns of the same
portrait: the only person with several photos that is available offline.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import BackendUnavailable
from .outputs import OutputManifest, atomic_save, atomic_write_text

# Faces in insightface's t1.jpg (x0, y0, x1, y1): two of the six people in the group photo.
GROUP_MEMBERS = {"stranger_left.jpg": (20, 210, 260, 450), "stranger_right.jpg": (1060, 210, 1280, 430)}


def astronaut() -> Image.Image:
    try:
        import skimage.data
    except ImportError:
        raise BackendUnavailable("sample photos need scikit-image: pip install scikit-image") from None
    return Image.fromarray(skimage.data.astronaut())


def insightface_image(name: str) -> Image.Image:
    try:
        import importlib.util

        spec = importlib.util.find_spec("insightface")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("sample photos need the insightface wheel's images: pip install insightface")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / name
    return Image.open(path).convert("RGB")


def astronaut_shots() -> dict[str, Image.Image]:
    """Different framings of the astronaut: distinct photos to a duplicate check, one identity."""
    base = astronaut()
    zoomed = base.crop((90, 0, 390, 300)).resize((640, 640), Image.Resampling.LANCZOS)
    wide = Image.new("RGB", (900, 700), (40, 40, 60))
    wide.paste(base, (300, 120))
    # turned inside a larger edge-extended canvas, so no empty wedge shows in the corners
    canvas = Image.fromarray(np.pad(np.asarray(base), ((128, 128), (128, 128), (0, 0)), mode="edge"))
    tilted = canvas.rotate(12, resample=Image.Resampling.BICUBIC).crop((128, 128, 640, 640))
    return {
        "astronaut.png": base,
        "astronaut_mirrored.jpg": base.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "astronaut_closeup.jpg": zoomed,
        "astronaut_wide.jpg": wide,
        "astronaut_tilted.jpg": tilted,
        "astronaut_portrait.webp": base.crop((60, 0, 420, 480)),
    }


def write_sample_photos(folder: str | Path) -> list[Path]:
    """A mixed folder: the astronaut several times, other people, a group photo and junk.

    Writes only files that are new or that an earlier call wrote (its manifest): a photo of the
    user's that happens to share a name is refused, not overwritten.
    """
    folder = Path(folder)
    group = insightface_image("t1.jpg")
    hanks = insightface_image("Tom_Hanks_54745.png").resize((448, 448), Image.Resampling.LANCZOS)
    noise = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
    images = dict(astronaut_shots())
    images["group_photo.jpg"] = group
    for name, box in GROUP_MEMBERS.items():
        images[name] = group.crop(box).resize((480, 480), Image.Resampling.LANCZOS)
    images["other_person.png"] = hanks
    images["masked.jpg"] = insightface_image("mask_white.jpg")
    images["no_face.png"] = Image.fromarray(noise)
    manifest = OutputManifest(folder)
    paths = [manifest.claim(folder / name) for name in [*images, "notes.txt"]]  # all refused before any is written
    manifest.save()
    for name, img in images.items():
        fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[Path(name).suffix]
        atomic_save(folder / name, partial(img.save, format=fmt, quality=95))
    atomic_write_text(folder / "notes.txt", "not a photo\n")
    return paths
