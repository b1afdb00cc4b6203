"""A kohya dataset from anywhere: images that cannot be read stop training with each one named, before any work."""

from __future__ import annotations

import pytest
import tiny_models
import torch

from headshot.errors import HeadshotError
from headshot.train.base_model_loading import load_base_model
from headshot.train.caching import encode_latents
from headshot.train.dataset import load_training_set


def _dataset(root, astronaut_img):
    for subset in ("10_ohwx woman", "5_ohwx woman"):
        (root / "img" / subset).mkdir(parents=True)
        astronaut_img.convert("RGB").resize((64, 64)).save(root / "img" / subset / "good.png")
    return root


def test_images_that_are_not_images_are_all_named_at_load(tmp_path, astronaut_img):
    root = _dataset(tmp_path / "dataset", astronaut_img)
    (root / "img" / "10_ohwx woman" / "notes.png").write_text("not a picture")
    (root / "img" / "5_ohwx woman" / "empty.jpg").write_bytes(b"")
    with pytest.raises(HeadshotError) as caught:
        load_training_set(root)
    message = str(caught.value)
    assert caught.value.code == "bad_dataset_image"
    assert "2 of 4 images" in message
    assert "10_ohwx woman/notes.png: not an image" in message and "5_ohwx woman/empty.jpg: not an image" in message
    assert "good.png" not in message


def test_an_image_cut_short_stops_latent_caching_naming_the_file(tmp_path, astronaut_img):
    root = _dataset(tmp_path / "dataset", astronaut_img)
    astronaut_img.convert("RGB").save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (root / "img" / "5_ohwx woman" / "cut.jpg").write_bytes(data[: len(data) // 2])
    images = load_training_set(root).images  # its header is whole: only decoding it finds the cut
    vae = load_base_model(tiny_models.make_tiny_sd1(tmp_path / "tiny_sd1")).vae
    with pytest.raises(HeadshotError) as caught:
        encode_latents(vae, images, 64, True, torch.device("cpu"), torch.float32, 7)
    message = str(caught.value)
    assert caught.value.code == "bad_dataset_image"
    assert "cut.jpg: the image cannot be read" in message and "remove it from the dataset" in message
