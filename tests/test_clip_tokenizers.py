"""CLIP tokenizers for base models, offline.

The tokenizer built from open_clip's BPE file tokenizes exactly like open_clip's own; a ComfyUI tokenizer
folder (vocab.json + merges.txt) is used and capped at 77 tokens, also when loading the tiny random SD1 of
tests/base_model_fixtures.py with the network refused; and a missing tokenizer names every place searched
and the fix.
"""

from __future__ import annotations

import json

import pytest
import torch
from base_model_fixtures import PROMPTS, offline, sd1  # noqa: F401  (fixtures)
from tiny_models import write_clip_tokenizer_files

from headshot.errors import BackendUnavailable
from headshot.train import clip_tokenizers
from headshot.train.base_model_loading import load_base_model


def test_bpe_tokenizer_matches_open_clip():
    """The tokenizer built from open_clip's BPE file tokenizes exactly like open_clip's SimpleTokenizer."""
    from open_clip.tokenizer import SimpleTokenizer, tokenize

    ours = clip_tokenizers.clip_tokenizer_from_bpe(pad_token="!")
    assert len(ours) == 49408 and ours.model_max_length == 77
    reference = SimpleTokenizer()
    for prompt in PROMPTS:
        assert ours(prompt, add_special_tokens=False).input_ids == reference.encode(prompt), prompt
    padded = torch.tensor(ours(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids)
    assert torch.equal(padded, tokenize(PROMPTS))  # open_clip pads with 0, i.e. "!"


def test_comfyui_tokenizer_folder_is_used_and_capped_at_77(sd1, tmp_path):
    """A vocab.json + merges.txt folder saying model_max_length 8192 (ComfyUI's sd1_tokenizer) is used, capped at 77."""
    folder = write_clip_tokenizer_files(tmp_path / "sd1_tokenizer")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 8192
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = clip_tokenizers.find_clip_tokenizer([folder])
    assert tokenizer.model_max_length == 77
    assert str(folder) in tokenizer.name_or_path
    assert len(tokenizer("a " * 200, padding="max_length", truncation=True).input_ids) == 77
    base = load_base_model(sd1[1], tokenizer_dirs=[folder])
    assert str(folder) in base.tokenizers[0].name_or_path and base.tokenizers[0].model_max_length == 77


def test_missing_tokenizer_names_every_place_searched(tmp_path, monkeypatch):
    """No folder, nothing in the HF cache, no open_clip_torch: BackendUnavailable lists all three and the fix."""
    empty_cache = tmp_path / "hf-cache"
    empty_cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(empty_cache))
    monkeypatch.setattr(clip_tokenizers, "_open_clip_bpe_path", lambda: None)
    nothing = tmp_path / "not-a-tokenizer"
    nothing.mkdir()
    with pytest.raises(BackendUnavailable) as caught:
        clip_tokenizers.find_clip_tokenizer([nothing])
    message = caught.value.message
    for fragment in (
        str(nothing),
        str(empty_cache),
        "openai/clip-vit-large-patch14",
        "open_clip_torch",
        "pip install open_clip_torch",
        "vocab.json",
    ):
        assert fragment in message
