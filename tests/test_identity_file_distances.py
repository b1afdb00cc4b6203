"""Face distance from a LoRA's identity file equals face distance from the training photos themselves.

Real photos (the astronaut in four framings, one with an EXIF orientation tag), the real dlib 128-d encoder:
train's identity file lists each photo's embedding, so evaluate averages the distance over the photos as
face_recognition's metric does; an identity file from before (the mean only) is still read, with a note.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from headshot.evaluate.evaluation import evaluate_pictures
from headshot.evaluate.picture_inputs import PictureInput
from headshot.evaluate.reference_faces import load_reference
from headshot.samples import astronaut_shots
from headshot.train.dataset import load_training_set
from headshot.train.selection import identity_reference, write_identity_reference

SHOTS = ("astronaut.png", "astronaut_closeup.jpg", "astronaut_portrait.webp", "astronaut_tilted.jpg")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity_file")
    subset = root / "data" / "img" / "10_ohwx woman"
    subset.mkdir(parents=True)
    shots = astronaut_shots()
    for i, name in enumerate(SHOTS):
        image = shots[name].convert("RGB")
        if i == 1:  # stored on its side with an EXIF tag saying so: both readers must turn it upright
            exif = Image.Exif()
            exif[0x0112] = 6  # rotate 90° clockwise to view
            image.transpose(Image.Transpose.ROTATE_90).save(subset / f"{i}.jpg", exif=exif, quality=95)
            (subset / f"{i}.txt").write_text("ohwx woman")
            continue
        image.save(subset / f"{i}.png")
        (subset / f"{i}.txt").write_text("ohwx woman")
    pictures = root / "pictures"
    pictures.mkdir()
    for i, name in enumerate(("astronaut_mirrored.jpg", "astronaut_wide.jpg")):
        shots[name].convert("RGB").save(pictures / f"p{i}.png")
    return {"data": root / "data", "pictures": pictures, "root": root}


def _pictures(folder):
    return [PictureInput(path, path.name) for path in sorted(folder.glob("*.png"))]


def test_identity_file_distances_equal_the_photo_folders(dataset, dlib_analyzer):
    training_set = load_training_set(dataset["data"])
    rows, count = identity_reference(training_set.images, dlib_analyzer)
    assert rows is not None and rows.shape == (len(SHOTS), 128) and count == len(SHOTS)
    identity_file = dataset["root"] / "lora.identity.json"
    write_identity_reference(identity_file, dlib_analyzer, rows, count)
    written = json.loads(identity_file.read_text())
    assert len(written["embeddings"]) == len(SHOTS)
    assert np.allclose(written["embedding"], rows.mean(axis=0), atol=1e-6)  # ranking's mean, as before

    from_file = load_reference(identity_file, dlib_analyzer, None)
    from_photos = load_reference(dataset["data"], dlib_analyzer, None)
    assert from_file.per_photo and from_file.photos == from_photos.photos == len(SHOTS)
    assert not [n for n in from_file.notes if "mean embedding" in n]

    pictures = _pictures(dataset["pictures"])
    by_file = evaluate_pictures(pictures, from_file, dlib_analyzer).summary()
    by_photos = evaluate_pictures(pictures, from_photos, dlib_analyzer).summary()
    assert by_file["face_distance_mean"] is not None
    assert by_file["face_distance_mean"] == pytest.approx(by_photos["face_distance_mean"], abs=1e-4)
    # before rounding: each picture's mean distance over the reference photos, file against photos
    for picture in pictures:
        encoding = dlib_analyzer.embed(
            np.asarray(Image.open(picture.path).convert("RGB")), _face(picture, dlib_analyzer)
        )
        file_mean = np.mean([np.linalg.norm(encoding - e) for e in from_file.dlib_encodings])
        photo_mean = np.mean([np.linalg.norm(encoding - e) for e in from_photos.dlib_encodings])
        assert file_mean == pytest.approx(photo_mean, abs=1e-5)


def _face(picture, analyzer):
    faces = analyzer.detect(np.asarray(Image.open(picture.path).convert("RGB")))
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def test_an_older_identity_file_with_the_mean_only_is_read_with_a_note(dataset, dlib_analyzer):
    training_set = load_training_set(dataset["data"])
    rows, count = identity_reference(training_set.images, dlib_analyzer)
    old = dataset["root"] / "old.identity.json"
    write_identity_reference(old, dlib_analyzer, rows.mean(axis=0), count)  # a 1-d embedding: the old format
    assert "embeddings" not in json.loads(old.read_text())
    reference = load_reference(old, dlib_analyzer, None)
    assert not reference.per_photo and reference.photos == 1
    assert any("mean embedding" in note for note in reference.notes)
