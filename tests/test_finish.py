"""Finishing: face detailer, ranking by likeness, results.json.

The detailer runs a real diffusers inpainting pipeline over the tiny random SD1 model
(tests/tiny_models.py): it proves the crop, mask and paste, not the quality of the repaint.
Likeness uses dlib's real face models on real photos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_models
from PIL import Image, ImageDraw, ImageOps

from headshot.errors import HeadshotError
from headshot.faces.base import Face
from headshot.faces.subject import people_from_left
from headshot.finish.batch import finish_pictures
from headshot.finish.detail_and_restore import Finishing, finish_image
from headshot.finish.detailer import DetailerSettings, choose_faces, detail_faces, face_mask, paste_feathered
from headshot.finish.ranked_results import Batch
from headshot.finish.ranking import identity_from_photos, load_identity, rank
from headshot.samples import astronaut_shots, insightface_image
from headshot.sampling.protocol import LoraWeight


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


def test_finish_repaints_the_face_of_a_real_photo_and_nothing_else(
    astronaut_img, dlib_analyzer, tiny_sampler, tmp_path
):
    """The finish path (read, detail, save, rank) over a real face: the saved picture differs from the
    photo inside the face box and is bit-identical outside the detailer's dilated mask."""
    source = tmp_path / "in" / "astronaut.png"
    source.parent.mkdir()
    astronaut_img.save(source)
    settings = DetailerSettings(guide_size=64, steps=3, denoise=0.6)
    finishing = Finishing(
        analyzer=dlib_analyzer, detailer=settings, sampler=tiny_sampler, detail_prompt=("ohwx woman, detailed face", "")
    )
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
    expected = [
        np.asarray(ImageOps.pad(p.convert("RGB"), (tile - 8, tile - 8), color=(230, 230, 230)), np.float32)
        for p in pictures
    ]

    def coarse(a):  # 8x8 block means: JPEG's error (large on noise) averages out, the picture stays
        return a.reshape(23, 8, 23, 8, 3).mean(axis=(1, 3))

    for i, shown in enumerate(tiles):
        errors = [np.abs(coarse(shown) - coarse(e)).mean() for e in expected]
        assert errors[i] < 6, f"tile {i} does not show its picture (mean error {errors[i]:.1f})"
        assert int(np.argmin(errors)) == i, f"tile {i} looks more like picture {int(np.argmin(errors))}"


def Path_name(entry):
    return entry["image"].rsplit("/", 1)[-1]


def test_rank_keeps_unscored_faces_after_scored_ones():
    entries = [
        {"image": "a", "identity_score": None, "faceless": False},
        {"image": "b", "identity_score": 0.7, "faceless": False},
        {"image": "c", "identity_score": None, "faceless": True},
    ]
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


# --- which faces the detailer repaints: one rule for finish, photoshoots and the ComfyUI node ---------------


def _face(x0, width, score):
    return Face(
        box=(x0, 100.0, x0 + width, 100.0 + width),
        score=score,
        eyes=np.array([[x0 + width * 0.3, 130.0], [x0 + width * 0.7, 130.0]]),
    )


FAINT_BIG, LEFT, RIGHT = _face(0, 200, 0.1), _face(220, 100, 1.0), _face(400, 80, 0.9)  # faint: a pattern


def test_one_rule_chooses_the_faces_to_repaint():
    faces = [FAINT_BIG, RIGHT, LEFT]  # as a detector lists them, largest first
    assert choose_faces(faces, "largest") == [LEFT]  # the subject of faces.subject, not the faint big hit
    assert choose_faces(faces, "all") == [RIGHT, LEFT]
    assert choose_faces(faces, "nth from left", 0) == [LEFT] and choose_faces(faces, "nth from left", 1) == [RIGHT]
    assert choose_faces(faces, "nth from left", 2) == [] and choose_faces([], "largest") == []
    with pytest.raises(HeadshotError, match="unknown face choice 'biggest'; choose one of largest, all, nth from left"):
        choose_faces(faces, "biggest")
    # a group photo of N people: the N best-scored faces, left to right (a low score is kept if nothing beats it)
    assert people_from_left(faces, 2) == [LEFT, RIGHT] and people_from_left([RIGHT, FAINT_BIG], 2) == [FAINT_BIG, RIGHT]


class FixedFaces:
    """STAND-IN face backend that finds the same faces in every picture."""

    name, same_person_distance = "fixed", 0.6

    def __init__(self, faces):
        self.faces = faces

    def detect(self, rgb):
        return list(self.faces)


class RecordingSampler:
    """STAND-IN host sampler (the Sampler protocol): records each repaint and returns the crop unchanged."""

    family = "sd1"

    def __init__(self):
        self.requests = []

    def masked_image_to_image(self, request, progress=None):
        self.requests.append(request)
        return request.image


@pytest.mark.parametrize("group", [False, True])
def test_finish_never_repaints_a_faint_detection(group):
    """finish took the detector's first face (or every face from the left for a group): a faint hit on a
    pattern got the person's face, or took the first person's LoRA."""
    sampler = RecordingSampler()
    loras = [LoraWeight("anna.safetensors"), LoraWeight("ben.safetensors")]
    finishing = Finishing(
        analyzer=FixedFaces([FAINT_BIG, RIGHT, LEFT]),
        detailer=DetailerSettings(guide_size=64),
        sampler=sampler,
        detail_loras=loras if group else loras[:1],
        group=group,
    )
    picture = Image.new("RGB", (512, 400), "gray")
    colours = {"faint": (255, 0, 0), "left": (0, 255, 0), "right": (0, 0, 255)}
    for name, face in zip(colours, (FAINT_BIG, LEFT, RIGHT)):
        ImageDraw.Draw(picture).rectangle(tuple(int(v) for v in face.box), fill=colours[name])
    _, done = finish_image(picture, finishing, seed=3)
    centre = {colour: name for name, colour in colours.items()}
    repainted = [(centre.get(r.image.getpixel((32, 32))), [lora.path for lora in r.loras]) for r in sampler.requests]
    if group:
        assert done == {"detailed_faces": 2}
        assert repainted == [("left", ["anna.safetensors"]), ("right", ["ben.safetensors"])]
    else:
        assert done == {"detailed_faces": 1} and repainted == [("left", ["anna.safetensors"])]
    assert [r.seed for r in sampler.requests] == [3, 4][: len(repainted)]
