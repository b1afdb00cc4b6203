"""The single-photo LoRA fallback: one real photo -> a varied dataset through prepare's own screening,
framing and captions, and `headshot train PHOTO --single-photo` on the tiny SD1 model.

The photos are real (the astronaut from scikit-image; two copies side by side for a two-face photo);
faces are found by the offline dlib backend. The training run proves wiring (a LoRA comes out of one
photo with the short preset), not likeness.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from headshot.cli import main
from headshot.dataset.prepare_settings import PrepareSettings
from headshot.dataset.single_photo import VARIANTS, make_variants, prepare_single_photo
from headshot.errors import HeadshotError
from headshot.faces.framing import find_upright
from headshot.faces.subject import pick_subject
from headshot.train.presets import PRESETS, planned_steps

SETTINGS = dict(face_backend="dlib", tagger="none", class_word="woman")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photo")
    from headshot.samples import astronaut

    astronaut().save(folder / "me.png")
    return folder / "me.png"


@pytest.fixture(scope="module")
def variants(photo, dlib_analyzer):
    upright = find_upright(Image.open(photo).convert("RGB"), dlib_analyzer)
    subject, _ = pick_subject(upright.faces)
    return {v.name: image for v, image in make_variants(upright.image, subject, 512, 1 / 3)}


@pytest.fixture(scope="module")
def prepared(photo, dlib_analyzer, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "dataset"
    return prepare_single_photo(photo, out, PrepareSettings(**SETTINGS), analyzer=dlib_analyzer), out


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32)


def test_there_are_about_ten_variants_and_no_two_are_alike(variants):
    assert 8 <= len(variants) <= 12
    names = list(variants)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            difference = np.abs(_rgb(variants[a]) - _rgb(variants[b])).mean()
            assert difference > 3.0, (a, b, difference)


def test_every_variant_keeps_one_face_the_prepare_stage_detects(variants, dlib_analyzer):
    for name, image in variants.items():
        upright = find_upright(image, dlib_analyzer)
        subject, rivals = pick_subject(upright.faces)
        assert subject is not None and rivals == 0 and upright.turned_degrees == 0, name


def test_the_framings_differ_in_face_size(variants, dlib_analyzer):
    one_of_each = {
        "face": "face",
        "headshot": "headshot",
        "shoulders": "shoulders_warm",
        "loose": "loose_mirrored_cool",
    }
    widths = {}
    for framing, name in one_of_each.items():
        (face,) = dlib_analyzer.detect(np.asarray(variants[name]))
        widths[framing] = face.width
    assert widths["face"] > widths["headshot"] > widths["shoulders"] > widths["loose"], widths


def test_the_mirror_variant_is_the_headshot_mirrored(variants):
    plain, mirrored = variants["headshot"], variants["headshot_mirrored"]
    assert np.array_equal(np.asarray(mirrored), np.asarray(plain.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    assert not np.array_equal(np.asarray(mirrored), np.asarray(plain))


def test_white_balance_and_side_light_move_colour_and_brightness_the_right_way(variants):
    base = _rgb(variants["face"])
    warm = _rgb(variants["face_mirrored_warm"])[:, ::-1]  # undo the mirror to compare pixel for pixel
    assert (warm[..., 0] - warm[..., 2]).mean() > (base[..., 0] - base[..., 2]).mean() + 10
    headshot = _rgb(variants["headshot"])
    cool_left = _rgb(variants["headshot_cool_light_left"])
    assert (cool_left[..., 2] - cool_left[..., 0]).mean() > (headshot[..., 2] - headshot[..., 0]).mean()
    gain = cool_left.mean(axis=(0, 2)) / np.maximum(headshot.mean(axis=(0, 2)), 1)
    assert gain[:64].mean() > 1.05 and gain[-64:].mean() < 0.9  # lit from the left, darker on the right


def test_variants_are_the_same_on_every_run(photo, dlib_analyzer, variants):
    again = find_upright(Image.open(photo).convert("RGB"), dlib_analyzer)
    subject, _ = pick_subject(again.faces)
    for variant, image in make_variants(again.image, subject, 512, 1 / 3):
        assert np.array_equal(np.asarray(image), np.asarray(variants[variant.name]))


def test_the_dataset_is_prepare_shaped_with_trigger_captions_and_each_variant_reported(prepared, photo):
    result, out = prepared
    assert len(result.kept) == len(VARIANTS)
    subset = out / "img" / "16_ohwx woman"
    images = sorted(subset.glob("*.png"))
    assert len(images) == len(VARIANTS)
    assert all((img.with_suffix(".txt")).read_text().startswith("ohwx woman") for img in images)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["kept"] == len(VARIANTS) and report["dataset_toml"] == "dataset.toml"
    assert {p["from_photo"] for p in report["photos"]} == {"me.png"}
    assert any("weaker than one trained on 10 photos" in w for w in report["warnings"])
    assert sorted(p.name for p in photo.parent.iterdir()) == ["me.png"]  # nothing beside the photo


def test_a_photo_with_no_face_is_refused_with_prepares_reason(tmp_path, dlib_analyzer):
    noise = (np.random.default_rng(0).random((400, 400, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "wall.png")
    with pytest.raises(HeadshotError) as caught:
        prepare_single_photo(tmp_path / "wall.png", tmp_path / "out", PrepareSettings(**SETTINGS), dlib_analyzer)
    assert caught.value.code == "no_face"
    assert "no face found" in str(caught.value) and "clearly visible" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_large_photo_whose_face_screening_found_on_a_larger_copy_makes_its_variants(
    tmp_path, astronaut_img, dlib_analyzer
):
    from test_prepare_draft import _wide_shot

    path = _wide_shot(astronaut_img, 100, tmp_path / "half_body.jpg")  # the face unseen at 1024 px
    result = prepare_single_photo(path, tmp_path / "out", PrepareSettings(**SETTINGS), dlib_analyzer)
    assert len(result.kept) >= 8, [(o.status, o.message) for o in result.photos]


def test_a_photo_with_two_faces_is_refused_with_prepares_reason(tmp_path, astronaut_img, dlib_analyzer):
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut_img, (0, 0))
    pair.paste(astronaut_img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 0))
    pair.save(tmp_path / "two.png")
    with pytest.raises(HeadshotError) as caught:
        prepare_single_photo(tmp_path / "two.png", tmp_path / "out", PrepareSettings(**SETTINGS), dlib_analyzer)
    assert caught.value.code == "multiple_faces"
    assert "2 faces" in str(caught.value) and "alone" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_folder_is_not_a_single_photo(tmp_path, dlib_analyzer):
    with pytest.raises(HeadshotError) as caught:
        prepare_single_photo(tmp_path, tmp_path / "out", PrepareSettings(**SETTINGS), dlib_analyzer)
    assert caught.value.code == "bad_option" and "one photo" in str(caught.value)


def test_the_single_photo_preset_trains_briefly():
    ten = len(VARIANTS)
    assert planned_steps(PRESETS["single_photo"], ten) < planned_steps(PRESETS["fast"], ten)
    assert PRESETS["single_photo"].value("checkpoint_every") < PRESETS["fast"].value("checkpoint_every")


def _headshot(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "headshot", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def test_prepare_single_photo_from_the_command_line(photo, tmp_path):
    run = _headshot("prepare", photo, "--single-photo", "--out", tmp_path / "ds", *_cli_faces())
    assert run.returncode == 0, run.stderr
    assert f"{len(VARIANTS)} of {len(VARIANTS)} photos kept" in run.stdout


def test_trigger_without_single_photo_is_refused(tmp_path):
    run = _headshot("train", tmp_path, "--base-model", tmp_path, "--out", tmp_path / "job", "--trigger", "sks")
    assert run.returncode == 1 and "--single-photo" in run.stderr


def _cli_faces():
    return ["--face-backend", "dlib", "--tagger", "none", "--class", "woman"]


def test_train_single_photo_writes_a_lora_with_the_short_preset(photo, tmp_path_factory, capsys):
    import tiny_models

    base = tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))
    job = tmp_path_factory.mktemp("job") / "job"
    # in this process (the training itself runs in its worker process, as always): the command's own start-up
    # is what the command-line tests above cover
    code = main([
        "train", str(photo), "--single-photo", "--base-model", str(base), "--out", str(job), "--steps", "4",
        "--rank", "4", "--resolution", "64", "--checkpoint-every", "2", "--face-backend", "dlib", "--class", "woman",
        "--device", "cpu",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr()
    record = json.loads((job / "job.json").read_text())
    assert record["state"] == "done" and record["settings"]["preset"] == "single_photo"
    assert record["settings"]["dataset_dir"].endswith("dataset")
    assert [p.name for p in job.glob("*.safetensors")] == ["headshot_lora.safetensors"]
    assert len(list((job / "dataset" / "img" / "16_ohwx woman").glob("*.png"))) == len(VARIANTS)
    assert sorted(p.name for p in photo.parent.iterdir()) == ["me.png"]
