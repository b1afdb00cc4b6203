"""Reading people's photos safely: orientation, colour modes, size caps, broken files."""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import HeadshotError, PhotoRejected

#: the formats prepare accepts; HEIC/HEIF only when pillow-heif is installed
PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
#: refuse anything larger: the largest phone photos are 200 MP (16,320 x 12,240) and pixel-shift stills 240 MP;
#: a file claiming more is a decompression bomb, not a selfie (decoded whole as RGB, 250 MP is 750 MB)
MAX_PIXELS = 250_000_000
NOT_AN_IMAGE = "not an image (or a format Pillow cannot read)"

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
    scale: float = 1.0  # full-resolution pixels per pixel of `image` (above 1 when decoded reduced)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


#: rows converted at a time from 16/32-bit or float greyscale: bounds the working memory of huge scans
_BAND_ROWS = 256


def _grey_to_8bit(img: Image.Image) -> Image.Image:
    """8-bit L from 16/32-bit integer or float greyscale, scaled by the data's own range.

    A band of rows at a time, in integers (float32 for "F"): a 9400x9400 16-bit scan converted as
    one float64 array took 2.3 GB; this needs the decoded image plus one byte per pixel.
    """
    _, top_value = cast("tuple[float, float]", img.getextrema())  # one band: (min, max)
    if img.mode == "F":
        top = 1.0 if top_value <= 1.0 else 255.0
    else:
        top = 65535 if top_value > 255 else 255  # 8-bit data stored in a 16-bit file stays as it is
    out = np.empty((img.height, img.width), np.uint8)
    for y in range(0, img.height, _BAND_ROWS):
        band = np.asarray(img.crop((0, y, img.width, min(img.height, y + _BAND_ROWS))))
        if img.mode == "F":
            scaled = np.clip(band.astype(np.float32) * np.float32(255.0 / top), 0, 255)
        else:
            scaled = (np.clip(band, 0, top).astype(np.uint32) * 255 + top // 2) // top  # rounded
        out[y : y + band.shape[0]] = scaled
    return Image.fromarray(out)


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any mode people's photos come in."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _grey_to_8bit(img).convert("RGB")
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
                converted = ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
                assert converted is not None  # None only with inPlace=True
                return converted
            except Exception:  # a broken profile still leaves a usable naive conversion
                pass
        return img.convert("RGB")
    return img.convert("RGB")


class TooManyPixels(ValueError):
    """An image whose header claims more pixels than allowed; `size` is None when far beyond even that."""

    def __init__(self, size: tuple[int, int] | None, limit: int):
        self.size, self.limit = size, limit
        super().__init__(
            f"{size[0]}x{size[1]} is too large to be a photo (limit {limit // 1_000_000} megapixels)"
            if size
            else "refused as a possible decompression bomb (far too many pixels)"
        )


_pillow_limit = threading.Lock()


@contextmanager
def _pillow_limit_at_least(pixels: int) -> Iterator[None]:
    """Pillow's own guard (a warning above MAX_IMAGE_PIXELS, 89 MP by default, an error above twice that) no lower
    than `pixels` while a header is read, then as it was: a 108 or 200 MP phone photo is not a bomb. A host's
    higher or absent limit is left alone."""
    with _pillow_limit:
        before = Image.MAX_IMAGE_PIXELS
        raised = before is not None and before < pixels
        if raised:
            Image.MAX_IMAGE_PIXELS = pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            if raised and Image.MAX_IMAGE_PIXELS == pixels:  # unless someone set their own meanwhile
                Image.MAX_IMAGE_PIXELS = before


def open_image(source: str | Path | IO[bytes], max_pixels: int | None = None) -> Image.Image:
    """Image.open (the header only: nothing is decoded yet) judged by our limit, `MAX_PIXELS` unless given,
    instead of Pillow's; raises TooManyPixels above it, and Pillow's errors for files it cannot read."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with _pillow_limit_at_least(limit):
            img = Image.open(source)
    except Image.DecompressionBombError:  # over twice the limit: not worth reading the size back
        raise TooManyPixels(None, limit) from None
    if img.width * img.height > limit:
        img.close()
        raise TooManyPixels(img.size, limit)
    return img


def header_problem(path: Path) -> str | None:
    """Why `path` cannot be opened as an image, from its header alone (a file cut short is found when decoded)."""
    try:
        with open_image(path):
            return None
    except TooManyPixels as exc:
        return str(exc)
    except UnidentifiedImageError:
        return NOT_AN_IMAGE
    except (OSError, SyntaxError, ValueError) as exc:
        return f"cannot be read ({exc})"


def read_photo(path: str | Path, draft_side: int | None = None) -> Photo:
    """Open one photo, upright by EXIF, as 8-bit RGB; raise PhotoRejected with a reason otherwise.

    With `draft_side`, a JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, several
    times faster than a full decode and a fraction of its memory), as small as keeps its long side
    at least `draft_side`; `Photo.scale` says how much was taken off.
    """
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:  # never open a pipe or device: reading it would block or never end
        code, what = problem
        raise PhotoRejected(f"{display_name(path.name)}: {what}", code=code)
    if path.suffix.lower() in (".heic", ".heif") and not _register_heif():
        raise PhotoRejected(
            f"{path.name}: HEIC photos need pillow-heif (pip install pillow-heif), or export the photo as JPEG",
            code="unreadable",
        )
    try:
        img = open_image(path)
        original_mode = img.mode
        full_width = img.width
        if draft_side is not None and img.format in ("JPEG", "MPO"):  # MPO: phones' JPEG with a preview
            _draft(img, draft_side)
        img.load()
    except (TooManyPixels, Image.DecompressionBombError) as exc:  # Pillow's: a TIFF tile beyond the size claimed
        why = exc if isinstance(exc, TooManyPixels) else TooManyPixels(None, MAX_PIXELS)
        raise PhotoRejected(f"{path.name}: {why}; resize it first", code="unreadable") from None
    except UnidentifiedImageError:
        raise PhotoRejected(
            f"{path.name}: {NOT_AN_IMAGE}; use JPEG, PNG or WebP",
            code="not_an_image",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoRejected(
            f"{path.name}: the file is damaged or cut short ({exc}); copy it again from the camera or phone",
            code="unreadable",
        ) from None
    exif_orientation = img.getexif().get(0x0112, 1)
    scale = full_width / img.width  # before the EXIF turn, so width matches width
    try:  # only when there is a turn to make: exif_transpose copies the whole image even for none
        if exif_orientation in range(2, 9):
            img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        exif_orientation = 1
    rotated = exif_orientation not in (1, None)
    return Photo(_to_rgb(img), path, exif_rotated=rotated, original_mode=original_mode, scale=scale)


def _draft(img: Image.Image, draft_side: int) -> None:
    """Ask libjpeg for the smallest DCT-scaled decode whose long side is at least `draft_side`."""
    target = draft_side / max(img.size)
    if target >= 1:
        return
    # draft() picks the strongest reduction that still covers the size asked for
    img.draft(None, (math.ceil(img.width * target), math.ceil(img.height * target)))


def display_name(name: str) -> str:
    """`name` as text for reports and terminals: bytes that are not UTF-8 shown as \ufffd."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def file_problem(path: Path) -> tuple[str, str] | None:
    """(code, what it is) when `path` is not a regular file that can be read as a photo; None when it is.

    Looks with stat() only, so a FIFO is never opened (opening one blocks until a writer comes).
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink_loop", "a symbolic link that leads back to itself (a loop); remove it"
        if os.path.islink(path):
            return "broken_link", "a symbolic link to a file that does not exist; remove it or copy the photo in"
        if exc.errno == errno.ENOENT:
            return "not_found", "not found"
        return "unreadable", f"cannot be read ({exc.strerror})"
    mode = info.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "folder", "a folder, not a photo"
    if stat.S_ISFIFO(mode):
        return "not_a_file", "a named pipe (FIFO), not a photo file"
    if stat.S_ISSOCK(mode):
        return "not_a_file", "a socket, not a photo file"
    return "not_a_file", "a device, not a photo file"


@dataclass
class FolderEntry:
    """One thing in a photo folder: a regular file to judge, or something else with the reason it is not one."""

    path: Path
    name: str  # for people: undecodable bytes shown as \ufffd
    problem: PhotoRejected | None = None


def scan_folder(folder: str | Path, skip: set[str] | frozenset[str] = frozenset()) -> list[FolderEntry]:
    """Every entry in `folder` except hidden ones, sub-folders and the names in `skip`, sorted.

    Symlink loops, broken links, FIFOs, sockets, devices and names that are not UTF-8 come back
    with a `problem`, so a report can say why each is not used instead of leaving it out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; give the folder that holds the photos")
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise HeadshotError(
            f"{folder} cannot be read ({exc.strerror}); check its permissions", "unreadable_folder"
        ) from None
    entries = []
    for name in names:
        if name.startswith(".") or name in skip:
            continue
        path, shown = folder / name, display_name(name)
        problem = file_problem(path)
        if problem is not None and problem[0] == "folder":
            continue
        rejected = PhotoRejected(f"{shown}: {problem[1]}", code=problem[0]) if problem else None
        if rejected is None and shown != name:
            rejected = PhotoRejected(
                f"{shown}: the file name is not valid UTF-8 text; rename the file (for example photo1.jpg)",
                code="bad_file_name",
            )
        entries.append(FolderEntry(path, shown, rejected))
    return entries


def list_photos(folder: str | Path) -> list[Path]:
    """Every regular file in `folder` (not hidden), sorted: prepare judges each, images or not."""
    return [e.path for e in scan_folder(folder) if e.problem is None or e.problem.code == "bad_file_name"]


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
    small = small.resize(size, Image.Resampling.BILINEAR)
    return small, img.width / size[0]


def read_photo_folder(folder: str | Path) -> list[tuple[str, Photo]]:
    """(file name, photo) for every readable photo in `folder`, skipping the rest; none readable is an error."""
    photos = []
    for path in list_photos(folder):
        try:
            photos.append((path.name, read_photo(path)))
        except PhotoRejected:
            continue
    if not photos:
        raise HeadshotError(
            f"{folder} holds no readable photo: put JPEG, PNG, WebP, BMP or TIFF photos of one person in it",
            "no_photos",
        )
    return photos
