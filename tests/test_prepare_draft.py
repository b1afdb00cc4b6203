"""Prepare decodes big JPEGs at a reduced (DCT) scale for detection, frames the face as at full size,
screens photos in worker processes with the same outcomes, and looks again on a larger copy for a face too
narrow to find at the detection size."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from headshot.dataset import photo_screen
from headshot.dataset.prepare import prepare_dataset
from headshot.dataset.prepare_settings import PrepareSettings
from headshot.faces.framing import find_upright, frame_headshot
from headshot.faces.subject import pick_subject
from headshot.photos import read_photo
from headshot.samples import astronaut_shots, write_sample_photos

BIG = 2048  # the astronaut enlarged 4x: her face about 364 px wide


@pytest.fixture
def draft_calls(monkeypatch):
    """(file name, size asked for, size decoded) of every JPEG draft request."""
    calls = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        answer = real(self, mode, size)
        calls.append((getattr(self, "filename", ""), size, self.size))
        return answer

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


@pytest.fixture
def big_photo(astronaut_img) -> Image.Image:
    return astronaut_img.resize((BIG, BIG), Image.Resampling.LANCZOS)


def _save_exif6(img: Image.Image, path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter: displayed after turning 90° clockwise
    img.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif.tobytes(), quality=95)


def test_read_photo_decodes_a_jpeg_reduced_when_asked(tmp_path, big_photo, draft_calls):
    path = tmp_path / "big.jpg"
    _save_exif6(big_photo, path)
    photo = read_photo(path, draft_side=900)
    assert photo.size == (BIG // 2, BIG // 2) and photo.scale == 2.0  # 1/4 would be under 900
    assert [size for _, size, _ in draft_calls] == [(900, 900)]
    assert photo.exif_rotated
    upright = big_photo.resize(photo.size, Image.Resampling.BOX)
    assert np.abs(np.asarray(photo.image, np.int16) - np.asarray(upright, np.int16)).mean() < 4
    assert read_photo(path).size == (BIG, BIG) and len(draft_calls) == 1  # no draft unless asked


@pytest.mark.parametrize("resolution", [256, 512])  # 256: cut from the reduced decode; 512: decoded again
def test_big_exif_rotated_jpeg_is_framed_as_at_full_size(
    tmp_path, astronaut_img, big_photo, dlib_analyzer, draft_calls, resolution
):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut_closeup.jpg", "astronaut_wide.jpg"):
        astronaut_shots()[name].save(folder / name, quality=95)
    _save_exif6(big_photo, folder / "big.jpg")
    settings = PrepareSettings(tagger="none", class_word="woman", resolution=resolution)
    result = prepare_dataset(folder, tmp_path / "out", settings, analyzer=dlib_analyzer)

    decodes = [decoded for name, _, decoded in draft_calls if name.endswith("big.jpg")]
    assert decodes[0] == (BIG // 2, BIG // 2)  # detection saw the 1/2-scale decode, not 4 MP
    assert len(decodes) == (1 if resolution == 256 else 2)
    outcome = next(o for o in result.photos if o.source == "big.jpg")
    assert outcome.status == "kept", outcome.message
    assert outcome.details["exif_rotated"] is True and outcome.details["turned_degrees"] == 0
    # as the full-size decode frames it: the face found in the same place, the same crop cut
    full = read_photo(folder / "big.jpg")
    upright = find_upright(full.image, dlib_analyzer, settings.detect_side, screening=True)  # prepare's search
    expected, _ = pick_subject(upright.faces)
    assert expected is not None
    assert np.allclose(outcome.details["face_box"], expected.box, atol=0.02 * expected.width)
    crop = Image.open(tmp_path / "out" / outcome.image)
    assert crop.size == (resolution, resolution)
    face, _ = pick_subject(dlib_analyzer.detect(np.asarray(crop)))
    assert face is not None and abs(face.roll_degrees) < 6
    full_crop, _ = frame_headshot(upright.image, expected, resolution, settings.face_share)
    difference = np.abs(np.asarray(crop, np.int16) - np.asarray(full_crop, np.int16)).mean()
    assert difference < 4


def test_worker_processes_screen_photos_as_this_process_does(tmp_path, dlib_analyzer, monkeypatch):
    folder = tmp_path / "photos"
    write_sample_photos(folder)
    pools, handed = [], []

    class CountedPool(photo_screen.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(args[0])
            super().__init__(*args, **kwargs)

        def submit(self, fn, *args, **kwargs):
            handed.append(args[0][1])
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(photo_screen, "ProcessPoolExecutor", CountedPool)
    settings = PrepareSettings(tagger="none", class_word="woman", face_backend="dlib")
    here = prepare_dataset(folder, tmp_path / "here", settings, analyzer=dlib_analyzer)  # a host's analyzer
    assert pools == []
    pooled = prepare_dataset(folder, tmp_path / "pooled", settings)  # prepare builds it: workers may too
    assert pools == [photo_screen._worker_count()]
    # the first photos always go to a worker, which reads the detector this process saved for it
    assert len(handed) >= 2
    assert [o.as_report() for o in pooled.photos] == [o.as_report() for o in here.photos]
    assert len(pooled.kept) >= 4
    for a, b in zip(pooled.kept, here.kept):
        assert np.array_equal(np.asarray(a.crop), np.asarray(b.crop))


def test_this_process_screens_ahead_while_a_workers_first_photo_is_slow(monkeypatch):
    """A worker still starting does not leave this process idle: it screens up to RUN_AHEAD photos itself
    before it waits for the worker's first, holds no more than that, and hands the results on in order."""
    log: list[str] = []

    def examine_here(path, name, analyzer, settings):
        log.append(f"here {name}")
        return photo_screen.Examined(details={"name": name})

    class StartingWorkerResult(Future):  # done only once asked for: the worker is still starting
        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def result(self, timeout=None):
            if not self.done():
                log.append(f"wait {self.name}")
                self.set_result(photo_screen.Examined(details={"name": self.name}))
            return super().result(timeout)

    class StartingPool:
        def submit(self, fn, photo):
            return StartingWorkerResult(photo[1])

    monkeypatch.setattr(photo_screen, "examine_photo", examine_here)
    names = [f"IMG_{i:04d}.jpg" for i in range(20)]
    photos = [(Path(name), name) for name in names]
    results = list(photo_screen._screen_beside_workers(photos, StartingPool(), 2, None, PrepareSettings()))
    assert [r.details["name"] for r in results] == names
    assert log[: photo_screen.RUN_AHEAD + 1] == [f"here {n}" for n in names[2 : 2 + photo_screen.RUN_AHEAD]] + [
        "wait IMG_0000.jpg"
    ]
    assert sorted(entry.split()[1] for entry in log) == names  # each photo screened once, here or in the worker


def _wide_shot(astronaut_img: Image.Image, face_px: int | None, path: Path) -> Path:
    """A 12 MP JPEG (4000x3000) of a plain, mottled background with the astronaut pasted in, her face about
    `face_px` wide (None: no one in it)."""
    rng = np.random.default_rng(7)
    photo = Image.fromarray(rng.integers(90, 160, (30, 40, 3), dtype=np.uint8)).resize((4000, 3000))
    if face_px:
        side = round(astronaut_img.width * face_px / 91)  # her face is about 91 px of the 512
        photo.paste(astronaut_img.resize((side, side), Image.Resampling.LANCZOS), (1700, 1200))
    photo.save(path, quality=92)
    return path


def test_a_face_too_narrow_to_find_at_the_detection_size_is_found_on_a_larger_copy(
    tmp_path, astronaut_img, dlib_analyzer
):
    """At detect_side 1024 a 4000 px photo is searched at about a quarter: faces under about 156 px go
    unseen there, though 85 px is wide enough to keep at 512 px. Such a face must be found, not called missing."""
    path = _wide_shot(astronaut_img, 100, tmp_path / "half_body.jpg")
    settings = PrepareSettings(resolution=512)
    photo = read_photo(path, draft_side=900)
    assert not find_upright(photo.image, dlib_analyzer, settings.detect_side, screening=True).faces  # unseen there
    examined = photo_screen.examine_photo(path, path.name, dlib_analyzer, settings)
    assert examined.rejection is None, examined.rejection
    assert 90 <= examined.details["face_width_px"] <= 140 and examined.crop.shape == (512, 512, 3)


def test_the_larger_copy_is_searched_a_quarter_turn_at_a_time_as_the_first_search_is(
    tmp_path, astronaut_img, dlib_analyzer
):
    """A sideways 12 MP photo with no EXIF turn to right it (a scan, an export that dropped the tag), the face
    too narrow for the detection size: found on the larger copy turned upright, and cropped upright."""
    upright_path = _wide_shot(astronaut_img, 100, tmp_path / "upright.jpg")
    path = tmp_path / "sideways.jpg"
    Image.open(upright_path).transpose(Image.Transpose.ROTATE_90).save(path, quality=92)  # pixels turned, no tag
    settings = PrepareSettings(resolution=512)
    examined = photo_screen.examine_photo(path, path.name, dlib_analyzer, settings)
    assert examined.rejection is None, examined.rejection
    assert examined.details["turned_degrees"] == 270 and 90 <= examined.details["face_width_px"] <= 140
    upright = photo_screen.examine_photo(upright_path, upright_path.name, dlib_analyzer, settings)
    assert upright.details["turned_degrees"] == 0
    # the same crop as from the upright photo (JPEG and resampling apart), not a sideways one
    difference = np.abs(examined.crop.astype(float) - upright.crop.astype(float)).mean()
    sideways = np.abs(np.rot90(examined.crop).astype(float) - upright.crop.astype(float)).mean()
    assert difference < 12 < sideways, (difference, sideways)


def test_no_face_names_the_narrowest_face_searched_for_where_that_is_above_the_minimum(
    tmp_path, astronaut_img, dlib_analyzer
):
    path = _wide_shot(astronaut_img, None, tmp_path / "wall.jpg")
    examined = photo_screen.examine_photo(path, path.name, dlib_analyzer, PrepareSettings(resolution=512))
    assert examined.rejection[0] == "no_face" and "narrower" not in examined.rejection[1]  # 85 px searched
    # keeping faces from 50 px: the larger copy (4000 px, the HOG window 80 px) cannot see all of those
    examined = photo_screen.examine_photo(path, path.name, dlib_analyzer, PrepareSettings(min_face_px=50))
    assert examined.rejection[0] == "no_face"
    assert "faces narrower than 80 px are not searched for" in examined.rejection[1], examined.rejection
    # a photo searched at its full size: nothing was left out for its size, whatever the minimum
    small = tmp_path / "small_wall.jpg"
    Image.open(path).resize((800, 600)).save(small)
    examined = photo_screen.examine_photo(small, small.name, dlib_analyzer, PrepareSettings(min_face_px=30))
    assert examined.rejection[0] == "no_face" and "narrower" not in examined.rejection[1], examined.rejection
