"""The Rank by Likeness and Evaluate Likeness nodes on real photos, run for real through the core.

Ranking against reference photos (the core's own likeness score, faceless pictures set aside),
an empty image output blocking the nodes it feeds, and Evaluate Likeness's distances and CLIP
score, the latter against a reference computation on a tiny random CLIP. ComfyUI's host modules
are the stand-ins of comfy_host_standin (see its docstring).
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from comfy_host_standin import (
    _check_outputs,
    comfy_host,  # noqa: F401  (a fixture)
)
from PIL import Image

from comfy_nodes import NODE_CLASS_MAPPINGS
from comfy_nodes.images import image_batch_to_pils, pil_to_image_batch
from headshot.samples import astronaut_shots, insightface_image


def _ranking_batch():
    shots = astronaut_shots()
    square = lambda img: img.convert("RGB").resize((384, 384), Image.LANCZOS)  # noqa: E731
    noise = Image.fromarray((np.random.default_rng(1).random((384, 384, 3)) * 255).astype(np.uint8))
    hanks = insightface_image("Tom_Hanks_54745.png")
    pictures = [square(hanks), square(shots["astronaut_closeup.jpg"]), noise, square(shots["astronaut_mirrored.jpg"])]
    return pictures, pil_to_image_batch(pictures)


def test_rank_by_likeness_on_real_photos(comfy_host):
    from headshot.faces.dlib_backend import DlibFaceAnalyzer
    from headshot.finish.ranking import identity_from_images, likeness

    pictures, batch = _ranking_batch()
    reference = pil_to_image_batch([astronaut_shots()["astronaut.png"]])
    cls = NODE_CLASS_MAPPINGS["HeadshotRankByLikeness"]
    result = cls().rank(batch, 0, "dlib", reference_images=reference)
    _check_outputs(cls, result)
    ranked, scores, faceless, below = result
    assert ranked.shape[0] == 3 and faceless.shape[0] == 1 and below.shape[0] == 0
    assert torch.equal(faceless[0], batch[2])
    assert {torch.equal(ranked[0], batch[i]) for i in (1, 3)} == {True, False}  # an astronaut first ...
    assert torch.equal(ranked[2], batch[0])  # ... the other person last
    lines = scores.splitlines()
    assert lines[1].startswith("#1 picture") and "set aside: picture 3: no face" in scores
    analyzer = DlibFaceAnalyzer()
    expected = likeness(
        pictures[0], analyzer, identity_from_images(image_batch_to_pils(reference), analyzer, "reference")
    ).score
    assert f"picture 1: likeness {expected:.3f}" in scores  # the core's own score
    assert not (comfy_host.base / "temp" / "headshot_reference").exists()  # no copies of the photos on disk

    ranked, _, _, below = cls().rank(batch, 1, "dlib", reference_images=reference)
    assert ranked.shape[0] == 1 and below.shape[0] == 2


def test_an_image_output_with_nothing_in_it_blocks_the_nodes_it_feeds(comfy_host, monkeypatch):
    """Inside ComfyUI an empty output is its ExecutionBlocker(None): SaveImage fails on an empty batch."""
    graph_utils = types.ModuleType("comfy_execution.graph_utils")  # STAND-IN for ComfyUI's module

    class ExecutionBlocker:
        def __init__(self, message):
            self.message = message

    graph_utils.ExecutionBlocker = ExecutionBlocker
    monkeypatch.setitem(sys.modules, "comfy_execution.graph_utils", graph_utils)
    _, batch = _ranking_batch()
    ranked, _, faceless, below = NODE_CLASS_MAPPINGS["HeadshotRankByLikeness"]().rank(batch[:2], 0, "dlib")
    assert ranked.shape[0] == 2  # both have a face (no identity given: not scored)
    assert isinstance(faceless, ExecutionBlocker) and faceless.message is None
    assert isinstance(below, ExecutionBlocker)


def test_evaluate_likeness_reports_distances_faceless_and_no_clip_score(comfy_host):
    _, batch = _ranking_batch()
    reference = pil_to_image_batch([astronaut_shots()["astronaut.png"]])
    cls = NODE_CLASS_MAPPINGS["HeadshotEvaluateLikeness"]
    result = cls().evaluate(batch, "dlib", reference_images=reference, prompt="a woman")
    _check_outputs(cls, result)
    text, report_json, mean_distance, faceless = result
    report = json.loads(report_json)
    assert faceless == report["faceless"] == 1 and report["faces"] == 3
    assert 0 < mean_distance == report["mean_distance"]
    assert report["clip_score"]["computed"] is False and "CLIP score: not computed" in text


def test_evaluate_likeness_clip_score_matches_a_reference_computation(comfy_host):
    """A tiny randomly initialised CLIP (the real architecture) and CLIP's real tokenizer files.

    The reference is computed apart from the node: PIL bicubic resize and CLIP's normalisation by
    hand, open_clip's own tokenizer, transformers' get_image_features / get_text_features, and the
    cosine in numpy. Seed 5 gives clearly positive, distinct cosines (seed 0 gives only negative
    ones, which the floor at 0 turns into all zeros: a comparison that would prove nothing).
    """
    open_clip = pytest.importorskip("open_clip")
    from tiny_models import write_clip_tokenizer_files
    from transformers import CLIPConfig, CLIPModel

    folder = comfy_host.base / "models" / "clip" / "tiny_clip"  # clip_model_dir must lie in ComfyUI's folders
    config = CLIPConfig(
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=49408
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(5)
    CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer_files(folder)
    pictures, batch = _ranking_batch()
    prompt = "corporate headshot of a woman"
    _, report_json, _, _ = NODE_CLASS_MAPPINGS["HeadshotEvaluateLikeness"]().evaluate(
        batch, "dlib", prompt=prompt, clip_model_dir=str(folder)
    )
    clip = json.loads(report_json)["clip_score"]

    model = CLIPModel.from_pretrained(str(folder)).eval()
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    pixels = np.stack(
        [(np.asarray(p.resize((32, 32), Image.BICUBIC), dtype=np.float64) / 255 - mean) / std for p in pictures]
    )  # the pictures are square: CLIP's resize + centre crop is a resize
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2).float())
        text = model.get_text_features(input_ids=open_clip.tokenize([prompt]))
    image = getattr(image, "pooler_output", image).numpy().astype(np.float64)
    text = getattr(text, "pooler_output", text).numpy().astype(np.float64)[0]
    cosine = image @ text / (np.linalg.norm(image, axis=1) * np.linalg.norm(text))
    expected = [100.0 * max(0.0, c) for c in cosine]
    assert min(expected) > 5 and max(expected) - min(expected) > 5  # the comparison can tell scores apart
    assert clip["computed"] and clip["per_image"] == pytest.approx(expected, abs=0.05)
    assert clip["mean"] == pytest.approx(sum(expected) / 4, abs=0.05)
