"""Load Photos: a folder of selfies (or an IMAGE batch from ComfyUI's loaders) into the graph."""

from __future__ import annotations

import hashlib

from headshot.errors import HeadshotError

from . import host
from .common import CATEGORY, folder_listing, resolve_folder
from .images import fit_batch, image_batch_to_pils, pil_to_image_batch
from .paths import RULE


class HeadshotLoadPhotos:
    DESCRIPTION = (
        "The person's photos: every photo in a folder, read as prepare reads them (EXIF orientation, "
        "colour modes, size limits), or the images of a connected IMAGE batch. Photos that cannot be "
        "read are left out here; Prepare Dataset reports the reason for each."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Folder holding 3-20 photos of one person. A "
                        "relative path is looked up in ComfyUI's input folder. Ignored when images "
                        "are connected." + RULE,
                    },
                ),
                "max_side": (
                    "INT",
                    {
                        "default": 1024,
                        "min": 64,
                        "max": 8192,
                        "step": 64,
                        "tooltip": "Longest side of the photos in the IMAGE batch (preview only: "
                        "Prepare Dataset reads the original files at full size).",
                    },
                ),
            },
            "optional": {
                "images": (
                    "IMAGE",
                    {
                        "tooltip": "A batch from ComfyUI's image loaders, used instead of the folder; "
                        "the images are written to a temporary folder for Prepare Dataset."
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("images", "file_names", "photos_folder")
    OUTPUT_TOOLTIPS = (
        "The photos as one batch, each fitted into max_side and centred on a common canvas.",
        "The file name of each image in the batch, one a line.",
        "The folder of the photos: connect it to Prepare Dataset.",
    )
    FUNCTION = "load"
    CATEGORY = f"{CATEGORY}/photos"

    @classmethod
    def IS_CHANGED(cls, folder="", max_side=1024, images=None, **_):
        from headshot.train.job_reuse import fingerprint

        # a folder outside the allowed ones is not even listed; load() then says why
        try:
            listing = folder_listing(resolve_folder(folder, "folder")) if folder else []
        except HeadshotError:
            listing = []
        return fingerprint(folder, max_side, listing)

    def load(self, folder: str, max_side: int, images=None):
        from headshot.photos import read_photo_folder

        if images is not None:
            pils = image_batch_to_pils(images)
            digest = hashlib.sha256(images.detach().cpu().numpy().tobytes()).hexdigest()[:16]
            path = host.temp_dir() / "headshot_photos" / digest
            path.mkdir(parents=True, exist_ok=True)
            names = []
            for i, img in enumerate(pils):
                name = f"photo_{i:03d}.png"
                if not (path / name).is_file():
                    img.save(path / name)
                names.append(name)
        else:
            path = resolve_folder(folder, "Load Photos folder")
            readable = read_photo_folder(path)
            pils, names = [photo.image for _, photo in readable], [name for name, _ in readable]
        batch = pil_to_image_batch(fit_batch(pils, max_side))
        return (batch, "\n".join(names), str(path))
