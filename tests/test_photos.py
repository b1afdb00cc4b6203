"""Reading photos: orientation, colour modes and broken files, each with its outcome and reason."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from headshot import photos
from headshot.errors import PhotoRejected
from headshot.photos import read_photo

# EXIF orientation -> how the pixels must be stored so the photo displays upright
STORED_FOR_ORIENTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # displayed after turning 90° clockwise
    8: Image.Transpose.ROTATE_270,
}


def _mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, astronaut_img, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"exif{orientation}.jpg"
    astronaut_img.transpose(STORED_FOR_ORIENTATION[orientation]).save(path, exif=exif.tobytes(), quality=95)
    photo = read_photo(path)
    assert photo.exif_rotated
    assert photo.size == astronaut_img.size
    assert _mean_abs_diff(photo.image, astronaut_img) < 4


def test_rgba_is_flattened_onto_white(tmp_path, astronaut_img):
    rgba = astronaut_img.convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:, :100] = 0  # a transparent left strip
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "cutout.png")
    img = read_photo(tmp_path / "cutout.png").image
    assert img.mode == "RGB"
    assert np.asarray(img)[:, :100].min() == 255
    assert _mean_abs_diff(img.crop((100, 0, 512, 512)), astronaut_img.crop((100, 0, 512, 512))) < 1


def test_cmyk_becomes_rgb(tmp_path, astronaut_img):
    astronaut_img.convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    photo = read_photo(tmp_path / "print.jpg")
    assert photo.original_mode == "CMYK" and photo.image.mode == "RGB"
    assert _mean_abs_diff(photo.image, astronaut_img) < 12


def test_sixteen_bit_greyscale_keeps_its_tones(tmp_path, astronaut_img):
    grey = np.asarray(astronaut_img.convert("L"), np.uint16) * 257  # full 16-bit range
    Image.fromarray(grey).save(tmp_path / "scan16.png")
    photo = read_photo(tmp_path / "scan16.png")
    assert photo.image.mode == "RGB"
    expected = np.asarray(astronaut_img.convert("L"), np.int16)
    assert np.abs(np.asarray(photo.image)[..., 0].astype(np.int16) - expected).max() <= 1


def test_greyscale_becomes_three_channels(tmp_path, astronaut_img):
    astronaut_img.convert("L").save(tmp_path / "bw.jpg")
    img = read_photo(tmp_path / "bw.jpg").image
    arr = np.asarray(img)
    assert img.mode == "RGB" and (arr[..., 0] == arr[..., 1]).all()


def test_text_file_is_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("shopping list")
    with pytest.raises(PhotoRejected) as caught:
        read_photo(tmp_path / "notes.jpg")
    assert caught.value.code == "not_an_image"
    assert "notes.jpg" in str(caught.value)


def test_truncated_file_is_unreadable(tmp_path, astronaut_img):
    astronaut_img.save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(PhotoRejected) as caught:
        read_photo(tmp_path / "cut.jpg")
    assert caught.value.code == "unreadable"
    assert "damaged or cut short" in str(caught.value)


def test_oversized_image_is_refused_before_decoding(tmp_path, monkeypatch, astronaut_img):
    astronaut_img.save(tmp_path / "big.png")
    monkeypatch.setattr(photos, "MAX_PIXELS", 100_000)  # the 512x512 photo now counts as a bomb
    with pytest.raises(PhotoRejected) as caught:
        read_photo(tmp_path / "big.png")
    assert caught.value.code == "unreadable" and "too large" in str(caught.value)


def test_heic_without_pillow_heif_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(photos, "_heif_state", False)
    (tmp_path / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(PhotoRejected) as caught:
        read_photo(tmp_path / "phone.heic")
    assert "pillow-heif" in str(caught.value)


def test_downscaled_keeps_aspect_and_reports_factor(astronaut_img):
    wide = astronaut_img.resize((4000, 3000))
    small, factor = photos.downscaled(wide, 1000)
    assert small.size == (1000, 750) and factor == pytest.approx(4.0)
