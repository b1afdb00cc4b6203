"""The numbers under the A1111 tab's gallery: the core's evaluate stage run on the batch Generate or Finish made.

The stand-in WebUI draws real photos (the astronaut, or noise with no face); dlib measures them for real,
and the CLIP score comes from a tiny randomly initialised CLIP (the real architecture, CLIP's real tokenizer
files): it proves the wiring and the bands shown, not what a real CLIP would score.
"""

from __future__ import annotations

import json

import pytest

from tests.test_a1111_glue import webui  # noqa: F401  (the fixture)
from tests.test_a1111_one_photo import FACEID, a1111, draw_astronauts, photo  # noqa: F401


@pytest.fixture
def no_clip_anywhere(tmp_path, monkeypatch):
    """No CLIP model in the Hugging Face cache or the hosts' folders, whatever this machine holds."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    for name in ("A1111_PATH", "COMFYUI_PATH"):
        monkeypatch.delenv(name, raising=False)


def _generated_with_numbers(webui, monkeypatch, photo):  # noqa: F811
    from a1111_extension import tab

    a1111(monkeypatch, [FACEID])
    draw_astronauts(webui)
    monkeypatch.setattr(tab, "TICK", 0.05)
    *_, last = tab.generate_run(
        "linkedin_corporate", "none", 2, 0, 512, 512, False, False, "none", 0, "dlib", 0, str(photo), 0.8
    )
    return last


def test_generate_shows_the_batchs_numbers_with_their_bands_and_each_pictures_in_its_caption(
    webui,  # noqa: F811
    monkeypatch,
    photo,  # noqa: F811
    no_clip_anywhere,
):
    from a1111_extension import tab

    gallery, status, zipped, numbers = _generated_with_numbers(webui, monkeypatch, photo)
    out = tab.LAST["out"]
    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    summary = evaluation["summary"]
    lines = numbers.splitlines()
    assert lines[0] == "2 picture(s) measured, 1 with a face"
    distance = summary["face_distance_mean"]
    assert distance < 0.6  # the astronaut against her own photo: dlib's same-person range
    assert f"face_distance_mean: {distance:g} - excellent (< 0.8)" in lines
    assert "faceless_count: 1 - excellent (≤ 2)" in lines and "clip_score_mean: n/a" in lines
    assert any(line.startswith("note: CLIP score not computed: no CLIP model folder found") for line in lines)
    captions = dict((path.rsplit("/", 1)[-1], caption) for path, caption in gallery)
    faced = next(e for e in evaluation["images"] if e["face_found"])
    assert captions[faced["image"].rsplit("/", 1)[-1]].endswith(f"· distance {faced['face_distance']:.3f}")
    assert any(caption.endswith("· no face") for caption in captions.values())
    assert "2 pictures in" in status and zipped.endswith("headshots.zip")


def test_finish_on_the_last_results_measures_again_and_never_takes_the_sheet_for_a_picture(
    webui,  # noqa: F811
    monkeypatch,
    photo,  # noqa: F811
    no_clip_anywhere,
):
    from a1111_extension import tab

    _generated_with_numbers(webui, monkeypatch, photo)
    *_, (gallery, status, _, numbers) = tab.finish_run("", True, "none", False, "none", 0, "dlib")
    assert len(gallery) == 2 and status.startswith("2 pictures in")  # the two pictures, not the evaluation files
    assert numbers.splitlines()[0] == "2 picture(s) measured, 1 with a face" and "excellent (< 0.8)" in numbers


def test_with_a_clip_model_in_models_clip_the_clip_score_and_its_band_are_shown(
    webui,  # noqa: F811
    monkeypatch,
    photo,  # noqa: F811
    no_clip_anywhere,
    tmp_path,
):
    torch = pytest.importorskip("torch")
    from tiny_models import write_clip_tokenizer_files
    from transformers import CLIPConfig, CLIPModel

    from headshot.evaluate.bands import BANDS

    folder = webui.data / "models" / "clip" / "tiny-clip"
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=49408),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(5)
    CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer_files(folder)
    _, _, _, numbers = _generated_with_numbers(webui, monkeypatch, photo)
    from a1111_extension import tab

    summary = json.loads((tab.LAST["out"] / "evaluation" / "evaluation.json").read_text())["summary"]
    mean = summary["clip_score_mean"]
    band = BANDS["clip_score_mean"].band_of(mean)
    assert mean is not None and f"clip_score_mean: {mean:g} - {band.grade} ({band.text})" in numbers.splitlines()
    assert "CLIP score not computed" not in numbers


def test_without_a_person_to_compare_with_the_box_says_so(tmp_path):
    from a1111_extension.likeness_numbers import measure

    assert measure(tmp_path, None).text.startswith("numbers not computed: choose an identity LoRA or give a reference")
