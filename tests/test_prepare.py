"""prepare on real photos and transformations of them: each case asserts its outcome and reason.

Real photos: scikit-image's astronaut and the images in the insightface wheel. Faces are found
and compared with dlib's real models (offline). Each case folder holds the case photo plus two
other shots of the astronaut, so the set has an identity consensus as a real upload does.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from headshot.dataset.prepare import prepare_dataset
from headshot.dataset.prepare_settings import PrepareSettings
from headshot.dataset.tags import CallableTagger
from headshot.errors import HeadshotError
from headshot.samples import astronaut_shots, insightface_image, write_sample_photos

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def _exif(img: Image.Image, orientation: int, stored: Image.Transpose):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return img.transpose(stored), {"exif": exif.tobytes()}


def _case_photo(kind: str, base: Image.Image, tmp_path):
    """Write the case photo; returns its file name."""
    if kind.startswith("exif"):
        orientation = int(kind[4:])
        stored = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
        img, extra = _exif(base, orientation, stored[orientation])
        img.save(tmp_path / f"{kind}.jpg", quality=95, **extra)
        return f"{kind}.jpg"
    makers = {
        "rotated90": lambda: base.transpose(Image.Transpose.ROTATE_90),
        "greyscale": lambda: base.convert("L"),
        "cmyk": lambda: base.convert("CMYK"),
        "rgba": lambda: base.convert("RGBA"),
        "blurred": lambda: base.filter(ImageFilter.GaussianBlur(3)),
        "downscaled": lambda: base.resize((200, 200), Image.LANCZOS),
        "dim": lambda: ImageEnhance.Brightness(base).enhance(0.5),  # dim but usable: kept
        "dark": lambda: ImageEnhance.Brightness(base).enhance(0.12),
        "washed_out": lambda: ImageEnhance.Brightness(base).enhance(1.8),
        "group": lambda: insightface_image("t1.jpg"),
    }
    name = f"{kind}.{'png' if kind == 'rgba' else 'jpg'}"
    makers[kind]().save(tmp_path / name, quality=95)
    return name


def _run(folder, out, analyzer, **options):
    return prepare_dataset(folder, out, PrepareSettings(tagger="none", **options), analyzer=analyzer)


@pytest.fixture
def case_folder(tmp_path):
    """Two other shots of the astronaut: the identity the case photo is judged against."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shots = astronaut_shots()
    for name in ("astronaut_closeup.jpg", "astronaut_wide.jpg"):
        shots[name].save(folder / name, quality=95)
    return folder


def _outcome(result, name):
    return next(p for p in result.photos if p.source == name)


@pytest.mark.parametrize(
    "kind, status, reason",
    [
        ("exif3", "kept", None),
        ("exif6", "kept", None),
        ("exif8", "kept", None),
        ("rotated90", "kept", None),
        ("greyscale", "kept", None),
        ("cmyk", "kept", None),
        ("rgba", "kept", None),
        ("blurred", "rejected", "blurry"),
        ("dim", "kept", None),
        ("dark", "rejected", "badly_exposed"),
        ("washed_out", "rejected", "badly_exposed"),
        ("downscaled", "rejected", "face_too_small"),
        ("group", "rejected", "multiple_faces"),
    ],
)
def test_transformed_photo_outcome(case_folder, tmp_path, astronaut_img, dlib_analyzer, kind, status, reason):
    name = _case_photo(kind, astronaut_img, case_folder)
    result = _run(case_folder, tmp_path / "out", dlib_analyzer, class_word="woman")
    outcome = _outcome(result, name)
    assert (outcome.status, outcome.reason) == (status, reason), outcome.message
    if status == "kept":
        crop = Image.open(tmp_path / "out" / outcome.image)
        faces = dlib_analyzer.detect(np.asarray(crop))
        assert len(faces) == 1 and abs(faces[0].roll_degrees) < 6


def test_exif_photo_needs_no_turn_after_exif(case_folder, tmp_path, astronaut_img, dlib_analyzer):
    name = _case_photo("exif6", astronaut_img, case_folder)
    outcome = _outcome(_run(case_folder, tmp_path / "out", dlib_analyzer), name)
    assert outcome.details["exif_rotated"] is True and outcome.details["turned_degrees"] == 0


def test_rotated_photo_without_exif_is_turned(case_folder, tmp_path, astronaut_img, dlib_analyzer):
    name = _case_photo("rotated90", astronaut_img, case_folder)
    outcome = _outcome(_run(case_folder, tmp_path / "out", dlib_analyzer), name)
    assert outcome.details["exif_rotated"] is False and outcome.details["turned_degrees"] == 270


def test_truncated_file_is_rejected_as_unreadable(case_folder, tmp_path, astronaut_img, dlib_analyzer):
    astronaut_img.save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (case_folder / "cut.jpg").write_bytes(data[: len(data) // 3])
    outcome = _outcome(_run(case_folder, tmp_path / "out", dlib_analyzer), "cut.jpg")
    assert (outcome.status, outcome.reason) == ("rejected", "unreadable")


def test_text_file_is_rejected_as_not_an_image(case_folder, tmp_path, dlib_analyzer):
    (case_folder / "notes.txt").write_text("remember the milk")
    outcome = _outcome(_run(case_folder, tmp_path / "out", dlib_analyzer), "notes.txt")
    assert (outcome.status, outcome.reason) == ("rejected", "not_an_image")


def test_same_photo_in_two_formats_is_kept_once(case_folder, tmp_path, astronaut_img, dlib_analyzer):
    astronaut_img.save(case_folder / "a_original.png")
    astronaut_img.save(case_folder / "b_copy.webp", quality=80)
    result = _run(case_folder, tmp_path / "out", dlib_analyzer)
    assert _outcome(result, "a_original.png").status == "kept"
    copy = _outcome(result, "b_copy.webp")
    assert (copy.status, copy.reason) == ("rejected", "duplicate")
    assert "a_original.png" in copy.message


def test_photo_without_a_face_is_rejected(case_folder, tmp_path, dlib_analyzer):
    insightface_image("mask_white.jpg").save(case_folder / "masked.jpg")
    outcome = _outcome(_run(case_folder, tmp_path / "out", dlib_analyzer), "masked.jpg")
    assert (outcome.status, outcome.reason) == ("rejected", "no_face")


def test_a_thumbnail_too_small_to_hold_a_usable_face_is_rejected_naming_its_size(case_folder, tmp_path, dlib_analyzer):
    astronaut_shots()["astronaut.png"].resize((64, 64)).save(case_folder / "thumb.png")
    outcome = _outcome(_run(case_folder, tmp_path / "out", dlib_analyzer), "thumb.png")
    assert (outcome.status, outcome.reason) == ("rejected", "no_face")
    assert "at 64x64 px the photo is too small to hold a face 85 px wide" in outcome.message
    assert "not a thumbnail" in outcome.message


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, dlib_analyzer):
    """The sample folder: six shots of the astronaut, three other people, a group photo and junk."""
    root = tmp_path_factory.mktemp("mixed")
    write_sample_photos(root / "photos")
    result = _run(root / "photos", root / "out", dlib_analyzer, class_word="woman", trigger="ohwx")
    return root / "out", result


def test_mixed_folder_keeps_only_the_persons_usable_photos(mixed):
    out, result = mixed
    kept = {p.source for p in result.photos if p.status == "kept"}
    assert kept == set(astronaut_shots())
    reasons = {p.source: p.reason for p in result.photos}
    assert reasons["group_photo.jpg"] == "multiple_faces"
    assert (
        reasons["other_person.png"]
        == reasons["stranger_left.jpg"]
        == reasons["stranger_right.jpg"]
        == "different_person"
    )
    assert reasons["notes.txt"] == "not_an_image"
    assert reasons["masked.jpg"] == reasons["no_face.png"] == "no_face"


def test_every_kept_crop_holds_one_upright_centred_face_at_size(mixed, dlib_analyzer):
    out, result = mixed
    report = json.loads((out / "report.json").read_text())
    kept = [p for p in report["photos"] if p["status"] == "kept"]
    assert kept
    for entry in kept:
        crop = Image.open(out / entry["image"])
        assert crop.size == (512, 512)
        faces = dlib_analyzer.detect(np.asarray(crop))
        assert len(faces) == 1, entry["source"]
        cx, cy = faces[0].center
        assert abs(cx - 256) < 0.08 * 512 and abs(cy - 256) < 0.08 * 512, entry["source"]
        assert abs(faces[0].roll_degrees) < 6, entry["source"]
        assert entry["caption"].startswith("ohwx woman")
        caption_file = (out / entry["image"]).with_suffix(".txt")
        assert caption_file.read_text().strip() == entry["caption"]


def test_report_follows_the_contract(mixed):
    out, result = mixed
    report = json.loads((out / "report.json").read_text())
    for entry in report["photos"]:
        assert set(entry) >= {"source", "status", "reason", "message"}
        if entry["status"] == "kept":
            assert entry["reason"] is None and (out / entry["image"]).is_file() and entry["caption"]
        else:
            assert entry["reason"] and entry["message"]
    assert report["summary"]["kept"] == len(astronaut_shots())


def test_kohya_layout_and_dataset_toml(mixed):
    out, result = mixed
    config = tomllib.loads((out / "dataset.toml").read_text())
    assert config["general"]["caption_extension"] == ".txt"
    subset = config["datasets"][0]["subsets"][0]
    image_dir = out / "img" / f"{subset['num_repeats']}_ohwx woman"
    assert subset["image_dir"] == image_dir.resolve().as_posix()
    assert subset["class_tokens"] == "ohwx woman"
    assert config["datasets"][0]["resolution"] == 512
    pngs = sorted(image_dir.glob("*.png"))
    assert len(pngs) == len(astronaut_shots())
    assert all(p.with_suffix(".txt").is_file() for p in pngs)


def test_contact_sheet_is_written(mixed):
    out, _ = mixed
    sheet = Image.open(out / "contact_sheet.jpg")
    assert sheet.width > 500 and sheet.height > 200


def test_keep_flag_keeps_a_rejected_photo(case_folder, tmp_path, astronaut_img, dlib_analyzer):
    name = _case_photo("blurred", astronaut_img, case_folder)
    result = _run(case_folder, tmp_path / "out", dlib_analyzer, keep={name})
    outcome = _outcome(result, name)
    assert outcome.status == "kept" and outcome.overridden["reason"] == "blurry"
    assert (tmp_path / "out" / outcome.image).is_file()


def test_reference_photo_decides_who_the_person_is(case_folder, tmp_path, dlib_analyzer):
    hanks = insightface_image("Tom_Hanks_54745.png").resize((448, 448), Image.LANCZOS)
    hanks.save(case_folder / "hanks.png")
    hanks.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "reference.png")
    result = _run(case_folder, tmp_path / "out", dlib_analyzer, reference=[tmp_path / "reference.png"])
    assert _outcome(result, "hanks.png").status == "kept"
    assert {p.reason for p in result.photos if p.source.startswith("astronaut")} == {"different_person"}


def test_a_reference_photo_is_searched_as_the_photos_are(case_folder, tmp_path, astronaut_img, dlib_analyzer):
    """A narrow face in a large reference photo (unseen at 1024 px) is found on a larger copy, as screening
    finds it in the set, instead of refusing the reference for having no face."""
    from test_prepare_draft import _wide_shot

    reference = _wide_shot(astronaut_img, 100, tmp_path / "half_body.jpg")
    result = _run(case_folder, tmp_path / "out", dlib_analyzer, reference=[reference])
    assert {p.status for p in result.photos} == {"kept"}


def test_no_usable_photo_fails_with_reasons_and_still_writes_report(tmp_path, dlib_analyzer):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    insightface_image("mask_black.jpg").save(folder / "masked.jpg")
    with pytest.raises(HeadshotError) as caught:
        _run(folder, tmp_path / "out", dlib_analyzer)
    assert caught.value.code == "no_photos_kept"
    assert "not_an_image" in str(caught.value) and "no_face" in str(caught.value)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {p["reason"] for p in report["photos"]} == {"not_an_image", "no_face"}


def test_tags_are_cleaned_and_trigger_goes_first(case_folder, tmp_path, dlib_analyzer):
    tagger = CallableTagger("fake-host-tagger", lambda image: "1girl, blue eyes, smile, orange jumpsuit, mole")
    result = prepare_dataset(
        case_folder, tmp_path / "out", PrepareSettings(class_word="woman"), analyzer=dlib_analyzer, tagger=tagger
    )
    outcome = result.kept[0]
    assert outcome.caption == "ohwx woman, smile, orange jumpsuit"
    removed = {entry["tag"] for entry in outcome.details["tags_removed"]}
    assert removed == {"1girl", "blue eyes", "mole"}


def test_class_defaults_to_person_when_backend_cannot_tell(case_folder, tmp_path, dlib_analyzer):
    result = _run(case_folder, tmp_path / "out", dlib_analyzer)
    assert result.class_word == "person"
    assert any("class word" in w for w in result.warnings)
    assert [p.name for p in (tmp_path / "out" / "img").iterdir()][0].endswith("_ohwx person")


def test_fewer_than_three_photos_kept_is_warned_about_with_what_to_do(case_folder, tmp_path, dlib_analyzer, mixed):
    two = _run(case_folder, tmp_path / "out", dlib_analyzer, class_word="woman")
    assert len(two.kept) == 2
    assert [w for w in two.warnings if w.startswith("only 2 photos kept")]
    assert "add photos" in "".join(two.warnings) and "--single-photo" in "".join(two.warnings)
    assert not [w for w in mixed[1].warnings if "photos kept" in w]  # six kept: nothing to say


def test_running_again_replaces_the_previous_dataset(case_folder, tmp_path, dlib_analyzer):
    _run(case_folder, tmp_path / "out", dlib_analyzer, class_word="woman", repeats=10)
    _run(case_folder, tmp_path / "out", dlib_analyzer, class_word="woman", repeats=12)
    assert [p.name for p in (tmp_path / "out" / "img").iterdir()] == ["12_ohwx woman"]


def test_bad_trigger_word_is_refused_before_any_work(case_folder, tmp_path, dlib_analyzer):
    with pytest.raises(HeadshotError) as caught:
        _run(case_folder, tmp_path / "out", dlib_analyzer, trigger="two words")
    assert caught.value.code == "bad_option"
    assert not (tmp_path / "out").exists()
