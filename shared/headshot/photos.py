"""Reading people's photos safely: orientation, colour modes, size caps, broken files."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PhotoRejected

#: the formats prepare accepts; HEIC/HEIF only when pillow-heif is installed
PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
#: refuse anything larger: a decompression bomb, not a selfie (about 15,000 x 10,000)
MAX_PIXELS = 150_000_000

_heif_state: bool | None = None


def _register_heif() -> bool:
    global _heif_state
    if _heif_state is None:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_state = True
        except ImportError:
            _heif_state = False
    return _heif_state


@dataclass
class Photo:
    """A photo ready for analysis: upright by its EXIF tag, 8-bit RGB."""

    image: Image.Image
    source: Path
    exif_rotated: bool  # EXIF said the pixels were stored turned or mirrored
    original_mode: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any mode people's photos come in."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale to 8 bits by the data's own range rather than clipping to white
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # transparent areas over white: black there reads as hair or a backdrop to detectors and trainers
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        icc = img.info.get("icc_profile")
        if icc:
            try:
                from PIL import ImageCms

                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                dst = ImageCms.createProfile("sRGB")
                return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
            except Exception:  # a broken profile still leaves a usable naive conversion
                pass
        return img.convert("RGB")
    return img.convert("RGB")


def read_photo(path: str | Path) -> Photo:
    """Open one photo, upright by EXIF, as 8-bit RGB; raise PhotoRejected with a reason otherwise."""
    path = Path(path)
    if path.suffix.lower() in (".heic", ".heif") and not _register_heif():
        raise PhotoRejected(
            f"{path.name}: HEIC photos need pillow-heif (pip install pillow-heif), or export the photo as JPEG",
            code="unreadable",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            if img.width * img.height > MAX_PIXELS:
                raise PhotoRejected(
                    f"{path.name}: {img.width}x{img.height} is too large to be a photo "
                    f"(limit {MAX_PIXELS // 1_000_000} megapixels); resize it first",
                    code="unreadable",
                )
            original_mode = img.mode
            img.load()
    except PhotoRejected:
        raise
    except UnidentifiedImageError:
        raise PhotoRejected(
            f"{path.name}: not an image (or a format Pillow cannot read); use JPEG, PNG or WebP",
            code="not_an_image",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoRejected(
            f"{path.name}: refused as a possible decompression bomb (far too many pixels); resize it first",
            code="unreadable",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoRejected(
            f"{path.name}: the file is damaged or cut short ({exc}); copy it again from the camera or phone",
            code="unreadable",
        ) from None
    exif_orientation = img.getexif().get(0x0112, 1)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        exif_orientation = 1
    return Photo(_to_rgb(img), path, exif_rotated=exif_orientation not in (1, None), original_mode=original_mode)


def list_photos(folder: str | Path) -> list[Path]:
    """Every regular file in `folder` (not hidden), sorted: prepare judges each, images or not."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; give the folder that holds the photos")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def downscaled(img: Image.Image, max_side: int) -> tuple[Image.Image, float]:
    """A copy no longer than `max_side` on its long side, and the factor from it back to `img`."""
    long_side = max(img.size)
    if long_side <= max_side:
        return img, 1.0
    scale = long_side / max_side
    size = (max(1, round(img.width / scale)), max(1, round(img.height / scale)))
    # reduce() is a fast integer box filter; the final resize is exact
    factor = int(scale // 2) or 1
    small = img.reduce(factor) if factor > 1 else img
    small = small.resize(size, Image.BILINEAR)
    return small, img.width / size[0]
