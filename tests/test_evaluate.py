"""The evaluate stage: who the person is (identity sources), the likeness report and the CLIP score.

Faces and identities use dlib's real models on real photos; the CLIP score uses a tiny randomly
initialised CLIP (the real architecture) with CLIP's real tokenizer files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from headshot.errors import HeadshotError
from headshot.evaluate.bands import BANDS
from headshot.evaluate.identity_source import IdentitySource, resolve_identity
from headshot.evaluate.likeness_report import likeness_report, report_text
from headshot.finish.ranking import identity_from_images, identity_from_photos, rank_by_likeness
from headshot.samples import astronaut_shots, insightface_image


@pytest.fixture(scope="module")
def pictures():
    """Two astronauts, another person, and noise (no face)."""
    shots = astronaut_shots()
    square = lambda img: img.convert("RGB").resize((384, 384), Image.LANCZOS)  # noqa: E731
    noise = Image.fromarray((np.random.default_rng(1).random((384, 384, 3)) * 255).astype(np.uint8))
    return [
        square(insightface_image("Tom_Hanks_54745.png")),
        square(shots["astronaut_closeup.jpg"]),
        noise,
        square(shots["astronaut_mirrored.jpg"]),
    ]


class Opened:
    """The host's analyzer loader, recording which backends were asked for."""

    def __init__(self, analyzer):
        self.analyzer, self.asked = analyzer, []

    def __call__(self, backend):
        self.asked.append(backend)
        return self.analyzer


def _identity_file(path, analyzer, backend="dlib"):
    identity = identity_from_images([astronaut_shots()["astronaut.png"]], analyzer, "astronaut")
    path.write_text(json.dumps({"embedding": identity.embedding.tolist(), "backend": backend}))
    return identity


def test_an_identity_file_under_auto_picks_the_backend_it_was_made_with(tmp_path, dlib_analyzer):
    expected = _identity_file(tmp_path / "person.identity.json", dlib_analyzer)
    opened = Opened(dlib_analyzer)
    person = resolve_identity(
        IdentitySource(
            identity_file=tmp_path / "person.identity.json", reference_images=[astronaut_shots()["astronaut.png"]]
        ),
        "auto",
        opened,
    )
    assert opened.asked == ["dlib"] and person.source == str(tmp_path / "person.identity.json")  # the file first
    assert np.allclose(person.identity.embedding, expected.embedding)


def test_a_loras_identity_is_the_file_written_beside_it(tmp_path, dlib_analyzer):
    _identity_file(tmp_path / "person.identity.json", dlib_analyzer)
    person = resolve_identity(IdentitySource(lora_file=tmp_path / "person.safetensors"), "dlib", Opened(dlib_analyzer))
    assert person.source == str(tmp_path / "person.identity.json") and person.identity.backend == "dlib"
    with pytest.raises(HeadshotError, match="written beside the LoRA") as caught:
        resolve_identity(IdentitySource(lora_file=tmp_path / "other.safetensors"), "dlib", Opened(dlib_analyzer))
    assert caught.value.code == "identity_missing"


def test_an_unreadable_identity_file_under_auto_is_a_clear_error(tmp_path, dlib_analyzer):
    """The ComfyUI node read the backend with a bare json.loads: a JSONDecodeError traceback."""
    broken = tmp_path / "broken.identity.json"
    broken.write_text("{not json")
    opened = Opened(dlib_analyzer)
    with pytest.raises(HeadshotError, match="is not an identity file") as caught:
        resolve_identity(IdentitySource(identity_file=broken), "auto", opened)
    assert caught.value.code == "identity_unreadable" and opened.asked == ["auto"]


def test_reference_images_give_the_identity_their_photos_give(tmp_path, dlib_analyzer):
    photos = [astronaut_shots()["astronaut.png"], astronaut_shots()["astronaut_closeup.jpg"]]
    for i, photo in enumerate(photos):
        photo.convert("RGB").save(tmp_path / f"reference_{i}.png")
    person = resolve_identity(
        IdentitySource(reference_images=photos, reference_folder=tmp_path), "dlib", Opened(dlib_analyzer)
    )
    assert person.source == "reference images"
    from_folder = resolve_identity(IdentitySource(reference_folder=tmp_path), "dlib", Opened(dlib_analyzer))
    assert from_folder.source == str(tmp_path)
    assert np.allclose(person.identity.embedding, from_folder.identity.embedding, atol=1e-6)
    assert np.allclose(from_folder.identity.embedding, identity_from_photos(tmp_path, dlib_analyzer).embedding)


def test_no_source_means_faces_are_found_not_scored(dlib_analyzer, pictures):
    opened = Opened(dlib_analyzer)
    person = resolve_identity(IdentitySource(), "dlib", opened)
    assert person.identity is None and person.source is None and opened.asked == ["dlib"]
    ranked = rank_by_likeness(pictures, person.analyzer, None)
    assert ranked.summary(None, None).splitlines() == [
        "identity: none given (faces are found, not scored)",
        "#1 picture 1: face found, not scored (no identity given)",
        "#2 picture 2: face found, not scored (no identity given)",
        "#3 picture 4: face found, not scored (no identity given)",
        "set aside: picture 3: no face",
    ]


def test_reference_images_without_a_face_are_refused(dlib_analyzer, pictures):
    with pytest.raises(HeadshotError, match="no face found in reference images") as caught:
        resolve_identity(IdentitySource(reference_images=[pictures[2]]), "dlib", Opened(dlib_analyzer))
    assert caught.value.code == "identity_no_faces"


def test_ranking_and_report_on_real_photos(dlib_analyzer, pictures):
    person = resolve_identity(
        IdentitySource(reference_images=[astronaut_shots()["astronaut.png"]]), "dlib", Opened(dlib_analyzer)
    )
    ranked = rank_by_likeness(pictures, dlib_analyzer, person.identity, top=1)
    assert ranked.kept[0]["index"] in (1, 3) and len(ranked.below) == 2 and [e["index"] for e in ranked.faceless] == [2]
    lines = ranked.summary(person.source, 1).splitlines()
    assert lines[0] == "identity: reference images" and lines[1].startswith(f"#1 picture {ranked.kept[0]['index'] + 1}")
    assert lines[-1] == "set aside: picture 3: no face" and sum("below top 1" in line for line in lines) == 2

    report = likeness_report(pictures, person, prompt="a woman")
    distances = [e["identity_distance"] for e in report["images"] if not e["faceless"]]
    assert (report["count"], report["faces"], report["faceless"]) == (4, 3, 1)
    assert report["mean_distance"] == pytest.approx(sum(distances) / 3, abs=1e-4)
    assert report["same_person_share"] == pytest.approx(sum(d < 0.6 for d in distances) / 3, abs=1e-4)
    assert report["clip_score"] == {"computed": False, "reason": "no CLIP model folder given (clip_model_dir)"}
    text = report_text(report).splitlines()
    assert text[0] == "4 picture(s): 3 with a face, 1 without - excellent (≤ 2)"  # the brief's faceless band
    assert text[1].startswith(f"identity distance: mean {report['mean_distance']:.3f} (dlib; same person below 0.60")
    band = next(b for b in BANDS["face_distance_mean"].bands if report["mean_distance"] < b.holds)
    assert text[1].endswith(f") - {band.grade} ({band.text})")  # dlib's scale: the brief's bands apply
    assert text[2] == "CLIP score: not computed (no CLIP model folder given (clip_model_dir))"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tiny_models import write_clip_tokenizer_files
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("tiny_clip")
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
    torch.manual_seed(5)  # clearly positive, distinct cosines (see test_comfy_likeness_nodes' CLIP test)
    CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer_files(folder)
    return folder


def test_clip_score_matches_a_reference_computation(tiny_clip, pictures, dlib_analyzer):
    """The reference: PIL bicubic resize and CLIP's normalisation by hand, open_clip's tokenizer,
    transformers' feature functions, the cosine in numpy."""
    open_clip = pytest.importorskip("open_clip")
    import torch
    from transformers import CLIPModel

    from headshot.evaluate.clip_score import clip_scores

    prompt = "corporate headshot of a woman"
    scores = clip_scores(pictures, prompt, tiny_clip)
    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    pixels = np.stack(
        [(np.asarray(p.resize((32, 32), Image.BICUBIC), dtype=np.float64) / 255 - mean) / std for p in pictures]
    )  # square pictures: CLIP's resize + centre crop is a resize
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2).float())
        text = model.get_text_features(input_ids=open_clip.tokenize([prompt]))
    image = getattr(image, "pooler_output", image).numpy().astype(np.float64)
    text = getattr(text, "pooler_output", text).numpy().astype(np.float64)[0]
    expected = [100.0 * max(0.0, c) for c in image @ text / (np.linalg.norm(image, axis=1) * np.linalg.norm(text))]
    assert min(expected) > 5 and max(expected) - min(expected) > 5  # the comparison can tell scores apart
    assert scores == pytest.approx(expected, abs=0.05)

    person = resolve_identity(IdentitySource(), "dlib", Opened(dlib_analyzer))
    report = likeness_report(pictures, person, prompt=prompt, clip_model_dir=tiny_clip)
    assert report["clip_score"] == {
        "computed": True,
        "model": str(tiny_clip),
        "prompt": prompt,
        "mean": round(sum(scores) / 4, 3),
        "per_image": scores,
    }
    assert likeness_report(pictures[:1], person, clip_model_dir=tiny_clip)["clip_score"] == {
        "computed": False,
        "reason": "no prompt given to compare the pictures with",
    }
    mean = report["clip_score"]["mean"]
    band = next(b for b in BANDS["clip_score_mean"].bands if mean >= b.holds)
    assert report_text(report).splitlines()[-1] == f"CLIP score: mean {mean:.2f} - {band.grade} ({band.text})"
