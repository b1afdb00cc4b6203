"""CLIP score with an open_clip checkpoint: a tiny randomly initialised open_clip CLIP (a small custom config in
open_clip_config.json beside open_clip_model.safetensors, the hub's layout) scores pictures exactly as open_clip's
own encode_image / encode_text cosine does; names in file names pick the architecture; a file that does not fit
it, and a missing open_clip_torch, are refused with the cause. Random weights: wiring, not meaning."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from headshot.errors import HeadshotError
from headshot.evaluate.clip_model import find_clip_model, load_clip_scorer
from headshot.evaluate.open_clip_model import arch_from_name

open_clip = pytest.importorskip("open_clip", reason="pip install 'headshot-studio[clip]' (open_clip_torch)")

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_open_clip")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": PREPROCESS}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", pretrained=None, load_weights=False)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def _pictures():
    rng = np.random.default_rng(1)
    return [Image.fromarray((rng.random((48 + 8 * i, 40, 3)) * 255).astype(np.uint8)) for i in range(3)]


def test_scores_equal_open_clips_own_cosine(checkpoint):
    prompts = ["a portrait photo of a woman", "a man in a suit, office", "a portrait photo of a woman"]
    for given in (checkpoint, checkpoint / "open_clip_model.safetensors"):
        found, where = find_clip_model(given)
        assert (found, where) == (given, "--clip-model")
        ours = load_clip_scorer(found).cosines(_pictures(), prompts, batch_size=2)

        # open_clip alone: its own loading of the same folder, transforms, tokenizer and encoders
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{checkpoint}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{checkpoint}")
        with torch.no_grad():
            images = model.encode_image(torch.stack([preprocess(p) for p in _pictures()]))
            texts = model.encode_text(tokenizer(prompts))
        images, texts = images / images.norm(dim=-1, keepdim=True), texts / texts.norm(dim=-1, keepdim=True)
        expected = (images * texts).sum(-1).tolist()
        assert ours == pytest.approx(expected, abs=1e-5)
    assert len(set(round(v, 6) for v in ours)) == 3  # a constant would not pass: each picture scores its own


def test_the_file_name_names_the_architecture():
    names = open_clip.list_models()
    from pathlib import Path

    assert arch_from_name(Path("ViT-B-32.safetensors"), names) == "ViT-B-32"
    assert arch_from_name(Path("vit_b_32-quickgelu_laion400m.bin"), names) == "ViT-B-32-quickgelu"
    assert arch_from_name(Path("my_clip.safetensors"), names) is None


def test_a_checkpoint_that_does_not_fit_its_named_architecture_is_refused(checkpoint, tmp_path):
    wrong = tmp_path / "ViT-B-32.safetensors"  # named ViT-B-32, holds the tiny model
    wrong.write_bytes((checkpoint / "open_clip_model.safetensors").read_bytes())
    with pytest.raises(HeadshotError, match="does not fit open_clip's ViT-B-32") as caught:
        load_clip_scorer(wrong)
    assert caught.value.code == "bad_option"
    unnamed = tmp_path / "weights.safetensors"
    unnamed.write_bytes(b"")
    with pytest.raises(HeadshotError, match="names no open_clip architecture"):
        load_clip_scorer(unnamed)


def test_without_open_clip_the_message_says_what_to_install(checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if open_clip_torch were not installed
    with pytest.raises(HeadshotError, match=r"pip install 'headshot-studio\[clip\]'") as caught:
        load_clip_scorer(checkpoint)
    assert caught.value.code == "backend_unavailable"
