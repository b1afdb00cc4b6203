"""Finishing: face detailer, ranking by likeness, results.json.

The detailer runs a real diffusers inpainting pipeline over the tiny random SD1 model
(tests/tiny_models.py): it proves the crop, mask and paste, not the quality of the repaint.
Likeness uses dlib's real face models on real photos.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import tiny_models
from headshot.errors import HeadshotError
from headshot.finish.detailer import DetailerSettings, detail_faces, face_mask, paste_feathered
from headshot.finish.ranking import identity_from_photos, load_identity, rank
from headshot.finish.results import Finishing, score_and_write
from headshot.samples import astronaut_shots, insightface_image


@pytest.fixture(scope="module")
def tiny_sampler(tmp_path_factory):
    from headshot.generate.sampler import DiffusersSampler

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
    images = _candidates()
    for name, img in images.items():
        img.save(tmp_path / name)
    entries = [{"image": name, "seed": i, "style": None} for i, name in enumerate(images)]
    results = score_and_write(tmp_path, entries, images, Finishing(analyzer=dlib_analyzer, identity=identity), top=3)
    assert {Path_name(e) for e in results if e["rank"]} == {"same_mirrored.png", "same_tilted.png", "same_wide.png"}
    faceless = [e for e in results if e["faceless"]]
    assert [Path_name(e) for e in faceless] == ["noise.png"] and faceless[0]["image"] == "faceless/noise.png"
    assert (tmp_path / "faceless" / "noise.png").is_file() and (tmp_path / "below_top").is_dir()
    scores = [e["identity_score"] for e in results if not e["faceless"]]
    assert scores == sorted(scores, reverse=True)
    written = json.loads((tmp_path / "results.json").read_text())
    assert all({"image", "seed", "style", "identity_score", "faceless"} <= set(e) for e in written)
    assert (tmp_path / "contact_sheet.jpg").is_file()


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
