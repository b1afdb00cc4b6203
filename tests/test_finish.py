"""Finishing: face detailer, ranking by likeness, results.json.

The detailer runs a real diffusers inpainting pipeline over the tiny random SD1 model
(tests/tiny_models.py): it proves the crop, mask and paste, not the quality of the repaint.
Likeness uses dlib's real face models on real photos.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

import tiny_models
from headshot.errors import HeadshotError
from headshot.finish.detailer import DetailerSettings, detail_faces, face_mask, paste_feathered
from headshot.finish.ranking import identity_from_photos, load_identity, rank
from headshot.finish.batch import finish_pictures
from headshot.finish.results import Batch, Finishing
from headshot.samples import astronaut_shots, insightface_image


@pytest.fixture(scope="module")
def tiny_sampler(tmp_path_factory):
    from headshot.sampling.diffusers_sampler import DiffusersSampler

    folder = tiny_models.make_tiny_sd1(tmp_path_factory.mktemp("tiny_sd1"))
    return DiffusersSampler(str(folder), device="cpu")


def test_detailer_changes_only_the_dilated_face_region(astronaut_img, dlib_analyzer, tiny_sampler):
    face = dlib_analyzer.detect(np.asarray(astronaut_img))[0]
    settings = DetailerSettings(guide_size=64, steps=3, denoise=0.6)
    result, done = detail_faces(astronaut_img, [face], tiny_sampler, "ohwx woman", "", seed=1, settings=settings)
    before, after = np.asarray(astronaut_img), np.asarray(result)
    outside = np.asarray(face_mask(astronaut_img.size, face, settings.dilation)) == 0
    assert np.array_equal(before[outside], after[outside])
    assert (before[~outside] != after[~outside]).any(), "the face itself must be repainted"
    assert len(done) == 1 and result.size == astronaut_img.size


def test_finish_repaints_the_face_of_a_real_photo_and_nothing_else(astronaut_img, dlib_analyzer, tiny_sampler,
                                                                   tmp_path):
    """The finish path (read, detail, save, rank) over a real face: the saved picture differs from the
    photo inside the face box and is bit-identical outside the detailer's dilated mask."""
    source = tmp_path / "in" / "astronaut.png"
    source.parent.mkdir()
    astronaut_img.save(source)
    settings = DetailerSettings(guide_size=64, steps=3, denoise=0.6)
    finishing = Finishing(analyzer=dlib_analyzer, detailer=settings, sampler=tiny_sampler,
                          detail_prompt=("ohwx woman, detailed face", ""))
    [entry] = finish_pictures([source], tmp_path / "out", finishing, seed=1)
    assert entry["detailed_faces"] == 1
    before = np.asarray(astronaut_img.convert("RGB"))
    after = np.asarray(Image.open(tmp_path / "out" / entry["image"]).convert("RGB"))
    face = dlib_analyzer.detect(before)[0]
    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    inside = (before[y0:y1, x0:x1] != after[y0:y1, x0:x1]).any(axis=-1)
    assert inside.mean() > 0.5, f"only {inside.mean():.0%} of the face box was repainted"
    outside = np.asarray(face_mask(astronaut_img.size, face, settings.dilation)) == 0
    assert np.array_equal(before[outside], after[outside])


def test_feathered_paste_has_zero_weight_outside_the_mask():
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    repainted = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = np.asarray(paste_feathered(original, repainted, mask, feather_px=6))
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], np.asarray(original)[outside])
    assert np.array_equal(out[32, 32], np.asarray(repainted)[32, 32])  # the centre is fully repainted


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    shots = astronaut_shots()
    for name in ("astronaut.png", "astronaut_closeup.jpg", "astronaut_portrait.webp"):
        shots[name].save(folder / name)
    return folder


def _candidates():
    shots = astronaut_shots()
    group = insightface_image("t1.jpg")
    noise = Image.fromarray((np.random.default_rng(3).random((256, 256, 3)) * 255).astype(np.uint8))
    return {
        "stranger_left.png": group.crop((20, 210, 260, 450)).resize((480, 480)),
        "same_mirrored.png": shots["astronaut_mirrored.jpg"],
        "hanks.png": insightface_image("Tom_Hanks_54745.png").resize((448, 448)),
        "same_tilted.png": shots["astronaut_tilted.jpg"],
        "noise.png": noise,
        "stranger_right.png": group.crop((1060, 210, 1280, 430)).resize((480, 480)),
        "same_wide.png": shots["astronaut_wide.jpg"],
    }


def test_ranking_puts_the_persons_photos_first_and_sets_faceless_aside(reference_dir, dlib_analyzer, tmp_path):
    identity = identity_from_photos(reference_dir, dlib_analyzer)
    batch = Batch(tmp_path, Finishing(analyzer=dlib_analyzer, identity=identity))
    for i, (name, img) in enumerate(_candidates().items()):
        batch.add(name.removesuffix(".png"), img, {"seed": i, "style": None})
    results = batch.write(top=3)
    assert {Path_name(e) for e in results if e["rank"]} == {"same_mirrored.png", "same_tilted.png", "same_wide.png"}
    faceless = [e for e in results if e["faceless"]]
    assert [Path_name(e) for e in faceless] == ["noise.png"] and faceless[0]["image"] == "faceless/noise.png"
    assert (tmp_path / "faceless" / "noise.png").is_file() and (tmp_path / "below_top").is_dir()
    scores = [e["identity_score"] for e in results if not e["faceless"]]
    assert scores == sorted(scores, reverse=True)
    written = json.loads((tmp_path / "results.json").read_text())
    assert all({"image", "seed", "style", "identity_score", "faceless"} <= set(e) for e in written)
    assert all((tmp_path / e["image"]).is_file() for e in written)
    _assert_sheet_shows(tmp_path / "contact_sheet.jpg", [Image.open(tmp_path / e["image"]) for e in written])


def _assert_sheet_shows(sheet_path, pictures, tile=192, caption=58, pad=8):
    """The sheet has one tile per picture, in order, and each tile shows its own picture."""
    sheet = Image.open(sheet_path).convert("RGB")
    columns = min(5, len(pictures))
    rows = -(-len(pictures) // columns)
    assert sheet.size == (columns * (tile + pad) + pad, rows * (tile + caption + pad) + pad)
    tiles = []
    for i in range(len(pictures)):
        x, y = pad + (i % columns) * (tile + pad) + 4, pad + (i // columns) * (tile + caption + pad) + 4
        tiles.append(np.asarray(sheet.crop((x, y, x + tile - 8, y + tile - 8)), np.float32))
    expected = [np.asarray(ImageOps.pad(p.convert("RGB"), (tile - 8, tile - 8), color=(230, 230, 230)), np.float32)
                for p in pictures]
    def coarse(a):  # 8x8 block means: JPEG's error (large on noise) averages out, the picture stays
        return a.reshape(23, 8, 23, 8, 3).mean(axis=(1, 3))

    for i, shown in enumerate(tiles):
        errors = [np.abs(coarse(shown) - coarse(e)).mean() for e in expected]
        assert errors[i] < 6, f"tile {i} does not show its picture (mean error {errors[i]:.1f})"
        assert int(np.argmin(errors)) == i, f"tile {i} looks more like picture {int(np.argmin(errors))}"


def Path_name(entry):
    return entry["image"].rsplit("/", 1)[-1]


def test_rank_keeps_unscored_faces_after_scored_ones():
    entries = [{"image": "a", "identity_score": None, "faceless": False},
               {"image": "b", "identity_score": 0.7, "faceless": False},
               {"image": "c", "identity_score": None, "faceless": True}]
    kept, below, faceless = rank(entries, top=None)
    assert [e["image"] for e in kept] == ["b", "a"] and [e["image"] for e in faceless] == ["c"]


def test_identity_file_from_another_backend_is_refused(tmp_path, dlib_analyzer):
    path = tmp_path / "x.identity.json"
    path.write_text(json.dumps({"backend": "insightface", "embedding": [0.0] * 512}))
    with pytest.raises(HeadshotError) as caught:
        load_identity(path, dlib_analyzer)
    assert caught.value.code == "identity_backend_mismatch" and "--face-backend insightface" in str(caught.value)


def test_reference_folder_without_faces_is_a_clear_error(tmp_path, dlib_analyzer):
    Image.new("RGB", (200, 200), "white").save(tmp_path / "blank.png")
    with pytest.raises(HeadshotError) as caught:
        identity_from_photos(tmp_path, dlib_analyzer)
    assert caught.value.code == "identity_no_faces"
