"""Upright faces and headshot framing, checked by detecting faces again in what we produce (dlib)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from headshot.faces.framing import find_upright, frame_headshot


@pytest.mark.parametrize("turn", [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270])
def test_photo_turned_without_exif_is_turned_back(astronaut_img, dlib_analyzer, turn):
    upright = find_upright(astronaut_img.transpose(turn), dlib_analyzer)
    assert upright.faces, "the face must be found after turning"
    assert upright.turned_degrees in (90, 180, 270)
    diff = np.abs(np.asarray(upright.image, np.int16) - np.asarray(astronaut_img, np.int16)).mean()
    assert diff < 1  # exactly the original pixels again


def test_upright_photo_is_not_turned(astronaut_img, dlib_analyzer):
    upright = find_upright(astronaut_img, dlib_analyzer)
    assert upright.turned_degrees == 0 and upright.faces


def test_faces_found_on_downscaled_copy_map_to_full_resolution(astronaut_img, dlib_analyzer):
    big = astronaut_img.resize((2048, 2048), Image.LANCZOS)
    small_faces = find_upright(astronaut_img, dlib_analyzer).faces
    big_faces = find_upright(big, dlib_analyzer, detect_side=512).faces
    assert big_faces[0].center == pytest.approx(tuple(4 * c for c in small_faces[0].center), abs=8)


def test_headshot_is_square_centred_and_face_a_third_wide(astronaut_img, dlib_analyzer):
    upright = find_upright(astronaut_img, dlib_analyzer)
    crop, framing = frame_headshot(upright.image, upright.faces[0], resolution=512, face_share=1 / 3)
    assert crop.size == (512, 512)
    again = dlib_analyzer.detect(np.asarray(crop))
    assert len(again) == 1
    cx, cy = again[0].center
    assert abs(cx - 256) < 20 and abs(cy - 256) < 20
    assert 512 / 3 * 0.8 < again[0].width < 512 / 3 * 1.25


def test_tilted_face_is_levelled(astronaut_img, dlib_analyzer):
    tilted = astronaut_img.rotate(15, resample=Image.BICUBIC)
    upright = find_upright(tilted, dlib_analyzer)
    assert abs(upright.faces[0].roll_degrees) > 10
    crop, framing = frame_headshot(upright.image, upright.faces[0], resolution=512)
    again = dlib_analyzer.detect(np.asarray(crop))
    assert abs(again[0].roll_degrees) < 5


def test_crop_past_the_edge_is_filled_from_the_photo_not_black(astronaut_img, dlib_analyzer):
    # the face near the top-left corner: a third-width crop must run past two edges
    corner = astronaut_img.crop((140, 40, 512, 512))
    upright = find_upright(corner, dlib_analyzer)
    crop, framing = frame_headshot(upright.image, upright.faces[0], resolution=512)
    assert framing.padded
    arr = np.asarray(crop)
    top_left = arr[:40, :40]
    assert top_left.mean() > 60, "the outside area must carry the photo's colours, not black"
    assert np.abs(np.diff(top_left.astype(np.int16), axis=1)).mean() < 6, "and be soft (blurred)"


def test_resolution_is_honoured(astronaut_img, dlib_analyzer):
    upright = find_upright(astronaut_img, dlib_analyzer)
    for resolution in (512, 768, 1024):
        crop, _ = frame_headshot(upright.image, upright.faces[0], resolution=resolution)
        assert crop.size == (resolution, resolution)
