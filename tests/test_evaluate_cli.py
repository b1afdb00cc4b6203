"""`headshot evaluate` end to end through the CLI, each number against an independent computation.

Faces: dlib's own detector, 5-point landmarks and ResNet encoder from face_recognition_models, called
directly here as face_recognition does, on the real photos the suite uses (scikit-image's astronaut,
insightface's Tom Hanks). CLIP: a tiny randomly initialised CLIP saved with save_pretrained, against
transformers' own get_image_features / get_text_features with CLIP's preprocessing done by hand.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headshot.cli import main
from headshot.evaluate.bands import BANDS
from headshot.samples import astronaut_shots, insightface_image

REFERENCE_SHOTS = ("astronaut.png", "astronaut_closeup.jpg", "astronaut_mirrored.jpg")


@pytest.fixture(autouse=True)
def no_clip_anywhere(tmp_path_factory, monkeypatch):
    """An empty Hugging Face cache and no host folders: CLIP is found only where a test puts it."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty_hf_cache")))
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.delenv("A1111_PATH", raising=False)


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    shots = astronaut_shots()
    for name in REFERENCE_SHOTS:
        shots[name].convert("RGB").save(folder / Path(name).with_suffix(".png").name)
    return folder


def _square(img: Image.Image, side: int = 448) -> Image.Image:
    return img.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def pictures_dir(tmp_path_factory):
    """The person (turned 12°, cropped), another person, noise, and a file cut short."""
    folder = tmp_path_factory.mktemp("pictures")
    shots = astronaut_shots()
    _square(shots["astronaut_tilted.jpg"]).save(folder / "a_person.png")
    _square(shots["astronaut_portrait.webp"]).save(folder / "b_person_crop.png")
    _square(insightface_image("Tom_Hanks_54745.png")).save(folder / "c_other.png")
    noise = (np.random.default_rng(3).random((448, 448, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(folder / "d_noise.png")
    whole = (folder / "a_person.png").read_bytes()
    (folder / "e_broken.png").write_bytes(whole[: len(whole) // 3])
    return folder


class FaceRecognition:
    """face_recognition's face_encodings and face_distance, written out on dlib directly."""

    def __init__(self):
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        models = Path(list(spec.submodule_search_locations)[0]) / "models"
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def encoding(self, img: Image.Image) -> np.ndarray | None:
        rgb = np.asarray(img.convert("RGB"))
        rects = self.detector(rgb, 1)
        if not rects:
            return None
        largest = max(rects, key=lambda r: r.width() * r.height())
        return np.array(self.encoder.compute_face_descriptor(rgb, self.landmarks(rgb, largest), 1))

    def face_distance(self, img: Image.Image, references: list[np.ndarray]) -> float | None:
        encoding = self.encoding(img)
        if encoding is None:
            return None
        return float(np.mean(np.linalg.norm(np.stack(references) - encoding, axis=1)))


def _run(capsys, *argv) -> tuple[int, dict, str]:
    code = main(["evaluate", *map(str, argv), "--face-backend", "dlib"])
    err = capsys.readouterr().err
    out = Path(argv[argv.index("--out") + 1])
    return code, json.loads((out / "evaluation.json").read_text()), err


def test_face_distance_faceless_and_an_unreadable_picture_on_real_photos(reference_dir, pictures_dir, tmp_path, capsys):
    code, report, err = _run(capsys, pictures_dir, "--reference", reference_dir, "--out", tmp_path / "out")
    assert code == 0
    reference = FaceRecognition()
    references = [reference.encoding(Image.open(p)) for p in sorted(reference_dir.iterdir())]
    assert all(r is not None for r in references)
    entries = {e["image"]: e for e in report["images"]}
    assert list(entries) == ["a_person.png", "b_person_crop.png", "c_other.png", "d_noise.png", "e_broken.png"]

    broken = entries.pop("e_broken.png")  # listed with its reason; the run went on
    assert broken["reason"] == "unreadable" and "cut short" in broken["message"] and broken["faceless"] is None
    for name, entry in entries.items():
        expected = reference.face_distance(Image.open(pictures_dir / name), references)
        assert entry["face_found"] is (expected is not None), name
        if expected is None:
            assert entry["face_distance"] is None and entry["faceless"] is True
        else:
            assert entry["face_distance"] == pytest.approx(expected, abs=1e-3), name
            assert entry["faceless"] is (expected >= 0.6), name  # face_recognition's tolerance
        assert entry["clip_score"] is None
    distances = [e["face_distance"] for e in entries.values() if e["face_distance"] is not None]
    # the comparison means something: the person is close, the other person far, the noise has no face
    assert entries["a_person.png"]["faceless"] is False and entries["c_other.png"]["faceless"] is True
    assert entries["d_noise.png"]["face_found"] is False and len(distances) == 3

    summary = report["summary"]
    assert summary["images"] == 4 and summary["unreadable"] == 1 and summary["faceless_count"] == 2
    assert summary["face_distance_mean"] == pytest.approx(np.mean(distances), abs=1e-4)
    assert summary["clip_score_mean"] is None and summary["bands"]["clip_score_mean"]["grade"] is None
    mean = summary["face_distance_mean"]
    expected_band = "< 0.8" if mean < 0.8 else "0.8–1.0" if mean < 1.0 else "1.0–1.2" if mean < 1.2 else "≥ 1.2"
    assert summary["bands"]["face_distance_mean"]["band"] == expected_band
    assert summary["bands"]["faceless_count"] == {"value": 2, "grade": "excellent", "band": "≤ 2"}
    assert report["reference"] == {"source": str(reference_dir), "kind": "photos", "photos": 3, "per_photo": True}

    # no CLIP model anywhere: null with a warning, on stderr and in the file
    assert "no CLIP model found" in err and any("no CLIP model found" in w for w in report["warnings"])
    assert "4/5 measuring e_broken.png" in err  # progress lines on stderr name each picture
    sheet = Image.open(tmp_path / "out" / "evaluation_sheet.jpg")
    assert sheet.size[0] > 5 * 192  # five tiles in a row


@pytest.mark.parametrize(
    "metric, value, band",
    [
        ("face_distance_mean", 0.79, "< 0.8"),
        ("face_distance_mean", 0.8, "0.8–1.0"),
        ("face_distance_mean", 1.2, "≥ 1.2"),
        ("clip_score_mean", 0.30, "≥ 0.30"),
        ("clip_score_mean", 0.2499, "0.20–0.25"),
        ("clip_score_mean", 0.1, "< 0.20"),
        ("faceless_count", 2, "≤ 2"),
        ("faceless_count", 4, "3–4"),
        ("faceless_count", 6, "5–6"),
        ("faceless_count", 7, "≥ 7"),
    ],
)
def test_bands_follow_the_brief(metric, value, band):
    assert BANDS[metric].band_of(value).text == band


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tiny_models import write_clip_tokenizer_files
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("tiny_clip")
    layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(**layers, vocab_size=49408),
        vision_config=dict(**layers, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(5)
    CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer_files(folder)
    return folder


def _reference_cosines(model_dir: Path, pictures: list[Image.Image], prompts: list[str]) -> list[float]:
    """CLIP's preprocessing by hand (square pictures: resize + centre crop is a resize), open_clip's
    tokenizer, transformers' feature functions, the cosine in numpy."""
    open_clip = pytest.importorskip("open_clip")
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(model_dir)).eval()
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    pixels = np.stack(
        [(np.asarray(p.resize((32, 32), Image.Resampling.BICUBIC), np.float64) / 255 - mean) / std for p in pictures]
    )
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2).float())
        text = model.get_text_features(input_ids=open_clip.tokenize(prompts))
    image = getattr(image, "pooler_output", image).numpy().astype(np.float64)
    text = getattr(text, "pooler_output", text).numpy().astype(np.float64)
    return [float(i @ t / (np.linalg.norm(i) * np.linalg.norm(t))) for i, t in zip(image, text)]


def test_results_json_prompts_lose_their_trigger_and_clip_is_the_raw_cosine(
    tiny_clip, reference_dir, pictures_dir, tmp_path, capsys
):
    from safetensors.numpy import save_file

    lora = tmp_path / "person.safetensors"  # an older results.json: the trigger comes from the LoRA's metadata
    save_file({"x": np.zeros(1, np.float32)}, str(lora), metadata={"headshot.trigger": "sks"})
    results = [
        {"image": "a_person.png", "prompt": "ohwx woman, corporate headshot, navy blazer", "triggers": ["ohwx"]},
        {"image": "c_other.png", "prompt": r"(sks man:1.2), studio portrait \(grey backdrop\)", "loras": [str(lora)]},
        {"image": None, "skipped": True, "message": "generate could not draw it"},
        {"image": "d_noise.png", "prompt": "OHWX, a painting of a lighthouse", "triggers": ["ohwx"]},
        {"image": "e_broken.png", "prompt": "ohwx woman", "triggers": ["ohwx"]},
    ]
    (pictures_dir / "results.json").write_text(json.dumps(results))
    try:
        code, report, err = _run(
            capsys, pictures_dir, "--reference", reference_dir, "--clip-model", tiny_clip, "--out", tmp_path / "out"
        )
    finally:
        (pictures_dir / "results.json").unlink()
    assert code == 0 and "no CLIP model found" not in err
    entries = report["images"]
    assert [e["image"] for e in entries] == ["a_person.png", "c_other.png", "d_noise.png", "e_broken.png"]
    prompts = [
        "woman, corporate headshot, navy blazer",
        "man, studio portrait (grey backdrop)",
        "a painting of a lighthouse",
    ]
    assert [e["prompt"] for e in entries[:3]] == prompts
    expected = _reference_cosines(tiny_clip, [Image.open(pictures_dir / e["image"]) for e in entries[:3]], prompts)
    assert max(expected) - min(expected) > 0.05  # the comparison can tell the scores apart
    assert [e["clip_score"] for e in entries[:3]] == pytest.approx(expected, abs=1e-3)
    assert entries[3]["reason"] == "unreadable" and entries[3]["clip_score"] is None
    assert report["summary"]["clip_score_mean"] == pytest.approx(np.mean(expected), abs=1e-3)
    assert report["clip_model"] == str(tiny_clip)


def test_a_clip_model_in_the_hugging_face_cache_is_found(tiny_clip, tmp_path, monkeypatch):
    from headshot.evaluate.clip_model import find_clip_model

    snapshot = tmp_path / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(tiny_clip, target_is_directory=True)
    (tmp_path / "hub" / "models--openai--clip-vit-base-patch32" / "refs").mkdir()
    (tmp_path / "hub" / "models--openai--clip-vit-base-patch32" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_clip_model(None) == (snapshot, f"the Hugging Face cache {tmp_path / 'hub'}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert find_clip_model(None)[0] is None
