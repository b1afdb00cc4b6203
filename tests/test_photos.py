"""Reading photos: orientation, colour modes and broken files, each with its outcome and reason."""

from __future__ import annotations

import base64
import os
import signal
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from service_kit import png_claiming

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


def test_a_200_megapixel_phone_photo_is_read_at_reduced_scale(tmp_path):
    # 16,320 x 12,240: a 200 MP phone camera's photo, which Pillow on its own refuses as a decompression bomb
    Image.new("RGB", (16320, 12240), (128, 100, 90)).save(tmp_path / "phone.jpg", quality=75)
    limit_before = Image.MAX_IMAGE_PIXELS
    photo = read_photo(tmp_path / "phone.jpg", draft_side=1000)
    assert photo.size == (2040, 1530) and photo.scale == 8.0  # decoded at 1/8 scale, never whole
    assert Image.MAX_IMAGE_PIXELS == limit_before  # Pillow's guard is the host's again


@pytest.mark.parametrize(
    "width, height, reason",
    [
        (20000, 15000, f"20000x15000 is too large to be a photo (limit {photos.MAX_PIXELS // 1_000_000} megapixels)"),
        (40000, 40000, "refused as a possible decompression bomb"),  # past twice the limit: Pillow's own refusal
    ],
)
def test_a_header_claiming_too_many_pixels_is_refused_with_the_reason(tmp_path, width, height, reason):
    (tmp_path / "claims.png").write_bytes(base64.b64decode(png_claiming(width, height)))
    with pytest.raises(PhotoRejected) as caught:
        read_photo(tmp_path / "claims.png")
    assert caught.value.code == "unreadable" and reason in str(caught.value)


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


def test_sixteen_bit_scan_is_converted_without_a_float64_copy(tmp_path):
    """A 9400x9400 16-bit PNG took 2.3 GB as one float64 array; bands of integers need ~1 byte a pixel."""
    side = 2000
    ramp = (np.arange(side, dtype=np.uint32) * 65535 // (side - 1)).astype(np.uint16)
    Image.fromarray(np.tile(ramp, (side, 1))).save(tmp_path / "scan16.png")
    with Image.open(tmp_path / "scan16.png") as img:
        img.load()
        assert img.mode == "I;16"
        tracemalloc.start()
        try:
            rgb = photos._to_rgb(img)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert rgb.mode == "RGB" and np.asarray(rgb).dtype == np.uint8
    assert list(np.asarray(rgb)[0, [0, side // 2, side - 1], 0]) == [0, 128, 255]
    assert peak < 4 * side * side, f"{peak / side / side:.1f} bytes per pixel"


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    """Opening a FIFO blocks until someone writes to it: the check must look, never open."""
    os.mkfifo(tmp_path / "pipe.jpg")

    def expired(signum, frame):
        raise TimeoutError("read_photo blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        with pytest.raises(PhotoRejected) as caught:
            read_photo(tmp_path / "pipe.jpg")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert caught.value.code == "not_a_file" and "pipe" in str(caught.value)


def test_a_missing_photo_is_not_found_rather_than_damaged(tmp_path):
    with pytest.raises(PhotoRejected) as caught:
        read_photo(tmp_path / "gone.jpg")
    assert caught.value.code == "not_found"
    assert "not found" in str(caught.value) and "damaged" not in str(caught.value)


def test_folder_scan_names_odd_entries_instead_of_skipping_them(tmp_path, astronaut_img):
    astronaut_img.save(tmp_path / "fine.jpg")
    astronaut_img.save(tmp_path / os.fsdecode(b"caf\xe9.jpg"))
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "sub").mkdir()  # folders are not photos and not news
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    found = {e.name: (e.problem.code if e.problem else None) for e in photos.scan_folder(tmp_path)}
    assert found == {
        "fine.jpg": None,
        "caf\ufffd.jpg": "bad_file_name",
        "loop.jpg": "symlink_loop",
        "pipe.jpg": "not_a_file",
    }


def test_a_photo_folder_yields_its_readable_photos_and_skips_the_rest(tmp_path, astronaut_img):
    astronaut_img.save(tmp_path / "b_face.jpg")
    (tmp_path / "a_notes.txt").write_text("not a photo")
    (tmp_path / "c_broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    found = photos.read_photo_folder(tmp_path)
    assert [name for name, _ in found] == ["b_face.jpg"]
    assert found[0][1].image.size == astronaut_img.size


def test_a_folder_without_a_readable_photo_is_refused_with_a_reason(tmp_path):
    from headshot.errors import HeadshotError

    (tmp_path / "notes.txt").write_text("not a photo")
    with pytest.raises(HeadshotError) as err:
        photos.read_photo_folder(tmp_path)
    assert err.value.code == "no_photos" and "no readable photo" in str(err.value)
