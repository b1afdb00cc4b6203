"""Taggers, run on tiny stand-in models.

Real tagger weights cannot be downloaded here, so the fixtures build SMALL ONNX GRAPHS with the
real models' signatures (WD14: input "input_1:0" [N,448,448,3] -> "predictions_sigmoid" [N,K];
DeepDanbooru: [N,512,512,3] -> [N,K]) and label files laid out like the real ones. Each graph
scores tags from the per-channel mean of its input, sigmoid(mean @ W + b), so which tags come out
proves the preprocessing: channel order, value scale and padding colour.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from headshot.dataset.tagging import (
    DeepDanbooruTagger,
    WD14Tagger,
    deepdanbooru_preprocess,
    find_tagger,
    wd14_preprocess,
)
from headshot.dataset.tags import CallableTagger, Tag, Tagger
from headshot.errors import BackendUnavailable, HeadshotError


def write_channel_mean_model(
    path: Path, input_name: str, output_name: str, size: int, weights: np.ndarray, bias: np.ndarray
) -> None:
    """An ONNX graph with a tagger's signature: sigmoid(mean over H,W of the input @ W + b)."""
    k = weights.shape[1]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["mean", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], [output_name]),
        ],
        "stand_in_tagger",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", k])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # loadable by older onnxruntime builds too
    onnx.save(model, str(path))


# name, category (selected_tags.csv codes), weight on channel (B, G, R after BGR), bias.
# Inputs are 0..255, so a weight of 0.2 with bias -40 fires only when that channel is near 255.
WD14_ROWS = [
    ("general", 9, (0, 0, 0), 2.0),
    ("sensitive", 9, (0, 0, 0), 0.0),
    ("questionable", 9, (0, 0, 0), -2.0),
    ("explicit", 9, (0, 0, 0), -4.0),
    ("blue_background", 0, (0.2, 0, 0), -40.0),  # channel 0 must be blue: BGR order
    ("red_background", 0, (0, 0, 0.2), -40.0),
    ("white_border", 0, (0, 0.2, 0), -20.0),  # green mean > ~100: white padding on a blue photo
    ("simple_background", 0, (0, 0, 0), 0.0),  # p = 0.5
    ("^_^", 0, (0, 0, 0), 2.0),
    ("o_o", 0, (0, 0, 0), -5.0),
    ("kaga_(kantai_collection)", 4, (0.2, 0, 0), -40.0),
    ("hatsune_miku", 4, (0, 0, 0), 0.0),  # p = 0.5: general threshold would pass, character not
]


def make_wd14_dir(folder: Path, size: int = 448) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["tag_id,name,category,count"]
    lines += [f"{i},{name},{cat},100" for i, (name, cat, _, _) in enumerate(WD14_ROWS)]
    (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    weights = np.array([w for _, _, w, _ in WD14_ROWS], dtype=np.float32).T
    bias = np.array([b for _, _, _, b in WD14_ROWS], dtype=np.float32)
    write_channel_mean_model(folder / "model.onnx", "input_1:0", "predictions_sigmoid", size, weights, bias)
    return folder


# DeepDanbooru: RGB 0..1 in; weights on (R, G, B).
DD_TAGS = [
    ("red", (20, 0, 0), -10.0),  # red mean > 0.5
    ("green", (0, 20, 0), -10.0),  # green mean > 0.5: white padding would show here
    ("overexposed", (10, 0, 0), -20.0),  # only fires for values > 1: input left at 0..255
    ("hatsune_miku", (0, 0, 0), 3.0),
    ("rating:safe", (0, 0, 0), 2.0),  # rating tags sit at the end of the real tags.txt
    ("rating:questionable", (0, 0, 0), -1.0),
    ("rating:explicit", (0, 0, 0), -3.0),
]


def make_deepdanbooru_dir(folder: Path, size: int = 512) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tags.txt").write_text("\n".join(t for t, _, _ in DD_TAGS) + "\n", encoding="utf-8")
    (folder / "tags-character.txt").write_text("hatsune_miku\n", encoding="utf-8")
    weights = np.array([w for _, w, _ in DD_TAGS], dtype=np.float32).T
    bias = np.array([b for _, _, b in DD_TAGS], dtype=np.float32)
    write_channel_mean_model(folder / "deepdanbooru.onnx", "input_1", "activation_172", size, weights, bias)
    return folder


def solid(rgb, width, height) -> Image.Image:
    return Image.new("RGB", (width, height), rgb)


def names(tags: list[Tag]) -> list[str]:
    return [t.name for t in tags]


@pytest.fixture(scope="module")
def wd14(tmp_path_factory) -> WD14Tagger:
    return WD14Tagger(make_wd14_dir(tmp_path_factory.mktemp("wd14")))


@pytest.fixture(scope="module")
def deepdanbooru(tmp_path_factory) -> DeepDanbooruTagger:
    return DeepDanbooruTagger(make_deepdanbooru_dir(tmp_path_factory.mktemp("dd")))


# --- WD14 -----------------------------------------------------------------------------------


def test_wd14_feeds_bgr_on_a_0_to_255_scale(wd14):
    found = names(wd14.tag(solid((0, 0, 255), 64, 64)))
    assert "blue background" in found
    assert "red background" not in found


def test_wd14_pads_a_non_square_photo_with_white(wd14):
    square = names(wd14.tag(solid((0, 0, 255), 40, 40)))
    wide = names(wd14.tag(solid((0, 0, 255), 40, 20)))
    assert "white border" not in square
    assert "white border" in wide and "blue background" in wide


def test_wd14_preprocess_centres_the_photo_and_shrinks_by_area():
    photo = solid((255, 0, 0), 30, 10)  # padded to 30x30: 10 white rows, 10 red, 10 white
    pixels = wd14_preprocess(photo, 15)
    assert pixels.shape == (15, 15, 3) and pixels.dtype == np.float32
    assert pixels[0, 7].tolist() == [255, 255, 255]
    assert pixels[7, 7].tolist() == [0, 0, 255]  # red, in BGR
    assert pixels[14, 7].tolist() == [255, 255, 255]


def test_wd14_returns_only_the_likeliest_rating(wd14):
    ratings = [t for t in wd14.tag(solid((0, 0, 255), 32, 32)) if t.category == "rating"]
    assert [t.name for t in ratings] == ["general"]


def test_wd14_character_tags_need_the_character_threshold(wd14):
    tags = {t.name: t for t in wd14.tag(solid((0, 0, 255), 32, 32))}
    assert tags["kaga (kantai collection)"].category == "character"
    assert "hatsune miku" not in tags  # p = 0.5 < 0.85
    assert tags["simple background"].category == "general"  # p = 0.5 >= 0.35


def test_wd14_general_threshold_is_configurable(tmp_path):
    strict = WD14Tagger(make_wd14_dir(tmp_path / "wd"), general_threshold=0.6)
    assert "simple background" not in names(strict.tag(solid((0, 0, 255), 32, 32)))


def test_tag_names_use_spaces_but_kaomoji_keep_underscores(wd14):
    found = names(wd14.tag(solid((0, 0, 255), 32, 32)))
    assert "^_^" in found
    assert "blue background" in found and "blue_background" not in found


def test_tags_come_sorted_by_score(wd14):
    scores = [t.score for t in wd14.tag(solid((0, 0, 255), 32, 32))]
    assert len(scores) >= 3 and scores == sorted(scores, reverse=True)


def test_wd14_reads_its_input_size_from_the_model(tmp_path):
    tagger = WD14Tagger(make_wd14_dir(tmp_path / "small", size=64))
    assert tagger.input_size == 64
    assert "blue background" in names(tagger.tag(solid((0, 0, 255), 100, 100)))


def test_wd14_rejects_a_label_file_from_another_model(tmp_path):
    folder = make_wd14_dir(tmp_path / "wd")
    csv = folder / "selected_tags.csv"
    csv.write_text(csv.read_text() + "99,extra_tag,0,1\n")
    with pytest.raises(BackendUnavailable, match="different models"):
        WD14Tagger(folder)


def test_wd14_is_a_tagger(wd14):
    assert isinstance(wd14, Tagger)


# --- DeepDanbooru ---------------------------------------------------------------------------


def test_deepdanbooru_feeds_rgb_on_a_0_to_1_scale(deepdanbooru):
    found = names(deepdanbooru.tag(solid((255, 0, 0), 64, 64)))
    assert "red" in found
    assert "overexposed" not in found


def test_deepdanbooru_pads_with_edge_pixels_not_a_colour(deepdanbooru):
    found = names(deepdanbooru.tag(solid((255, 0, 0), 64, 16)))
    assert "red" in found and "green" not in found  # black padding loses red; white adds green


def test_deepdanbooru_preprocess_repeats_the_edge_rows():
    photo = Image.new("RGB", (20, 10))
    photo.paste((255, 0, 0), (0, 0, 20, 5))
    photo.paste((0, 0, 255), (0, 5, 20, 10))
    pixels = deepdanbooru_preprocess(photo, 20)
    assert pixels.shape == (20, 20, 3) and pixels.max() <= 1.0
    assert pixels[0, 10].tolist() == [1.0, 0.0, 0.0]
    assert pixels[19, 10].tolist() == [0.0, 0.0, 1.0]


def test_deepdanbooru_sorts_tags_into_categories(deepdanbooru):
    tags = {t.name: t.category for t in deepdanbooru.tag(solid((255, 0, 0), 32, 32))}
    assert tags["hatsune miku"] == "character"
    assert tags["red"] == "general"
    assert [n for n, c in tags.items() if c == "rating"] == ["rating:safe"]


# --- host-provided tagger -------------------------------------------------------------------


def test_callable_tagger_takes_a_score_dict():
    tagger = CallableTagger("host", lambda im: {"smile": 0.6, "white_shirt": 0.9, "rating:safe": 0.8})
    assert [(t.name, t.category) for t in tagger.tag(solid((0, 0, 0), 8, 8))] == [
        ("white shirt", "general"),
        ("rating:safe", "rating"),
        ("smile", "general"),
    ]


def test_callable_tagger_keeps_the_order_of_a_plain_a1111_string():
    tagger = CallableTagger("a1111", lambda im: "1boy, white_shirt, smile, ^_^")
    assert names(tagger.tag(solid((0, 0, 0), 8, 8))) == ["1boy", "white shirt", "smile", "^_^"]


def test_callable_tagger_reads_a1111_ranks_and_escapes():
    text = r"(smile:0.612), (kaga \(kantai collection\):0.950)"
    tags = CallableTagger("a1111", lambda im: text).tag(solid((0, 0, 0), 8, 8))
    assert [(t.name, t.score) for t in tags] == [("kaga (kantai collection)", 0.95), ("smile", 0.612)]


def test_callable_tagger_rejects_other_return_types():
    with pytest.raises(HeadshotError, match="expected a dict"):
        CallableTagger("broken", lambda im: None).tag(solid((0, 0, 0), 8, 8))


# --- find_tagger ----------------------------------------------------------------------------


def test_find_tagger_none_means_no_tagger(tmp_path):
    make_wd14_dir(tmp_path / "wd")
    assert find_tagger("none", [tmp_path]) is None


def test_find_tagger_auto_without_models_returns_none(tmp_path):
    (tmp_path / "empty_subfolder").mkdir()
    assert find_tagger("auto", [tmp_path, tmp_path / "missing"]) is None


def test_find_tagger_auto_prefers_wd14_in_a_subfolder(tmp_path):
    dd = make_deepdanbooru_dir(tmp_path / "dd")
    make_wd14_dir(tmp_path / "models" / "wd-v1-4-moat-tagger-v2")
    tagger = find_tagger("auto", [dd, tmp_path / "models"])
    assert isinstance(tagger, WD14Tagger)
    assert tagger.model_dir == tmp_path / "models" / "wd-v1-4-moat-tagger-v2"


def test_find_tagger_auto_falls_back_to_deepdanbooru(tmp_path):
    make_deepdanbooru_dir(tmp_path / "deepdanbooru")
    assert isinstance(find_tagger("auto", [tmp_path]), DeepDanbooruTagger)


def test_find_tagger_uses_the_search_dir_itself(tmp_path):
    folder = make_deepdanbooru_dir(tmp_path / "dd")
    assert find_tagger("deepdanbooru", [folder]).model_dir == folder


def test_missing_wd14_says_where_it_looked_and_what_to_get(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(BackendUnavailable) as caught:
        find_tagger("wd14", [tmp_path / "models", tmp_path / "nowhere"])
    message = str(caught.value)
    assert str(tmp_path / "models") in message
    assert f"{tmp_path / 'nowhere'} (does not exist)" in message
    assert "model.onnx" in message and "selected_tags.csv" in message
    assert "SmilingWolf/wd-v1-4-moat-tagger-v2" in message


def test_missing_deepdanbooru_names_its_files(tmp_path):
    with pytest.raises(BackendUnavailable, match=r"tags\.txt") as caught:
        find_tagger("deepdanbooru", [tmp_path])
    assert ".onnx" in str(caught.value)


def test_an_unloadable_model_file_is_named(tmp_path):
    folder = make_wd14_dir(tmp_path / "wd")
    (folder / "model.onnx").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(BackendUnavailable, match="cannot load") as caught:
        find_tagger("auto", [tmp_path])
    assert str(folder / "model.onnx") in str(caught.value)


def test_find_tagger_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(HeadshotError, match="Unknown tagger"):
        find_tagger("clip", [tmp_path])


class CaptionFileTagger(CallableTagger):
    """A tagger kind a test registers: its model folder holds tags.csv (tag,score lines)."""

    def __init__(self, model_dir: Path, providers=None):
        self.model_dir = model_dir
        pairs = [line.split(",") for line in (model_dir / "tags.csv").read_text().splitlines()]
        super().__init__(f"captionfile:{model_dir.name}", lambda image: {t: float(s) for t, s in pairs})


def test_a_registered_tagger_kind_is_found_offered_and_gone_when_removed(monkeypatch, tmp_path):
    from headshot.cli import build_parser
    from headshot.dataset.tagging import TAGGERS, TaggerKind, tagger_choices

    kind = TaggerKind(lambda d: (d / "tags.csv").is_file(), CaptionFileTagger, "a folder with tags.csv", "captions")
    monkeypatch.setitem(TAGGERS, "captionfile", kind)
    folder = tmp_path / "models" / "mine"
    folder.mkdir(parents=True)
    (folder / "tags.csv").write_text("smile,0.9\nwhite_shirt,0.6")
    assert tagger_choices() == ("auto", "wd14", "deepdanbooru", "captionfile", "none")
    tagger = find_tagger("captionfile", [tmp_path / "models"])
    assert isinstance(tagger, CaptionFileTagger) and tagger.model_dir == folder
    assert [t.name for t in tagger.tag(solid((0, 0, 0), 8, 8))] == ["smile", "white shirt"]
    assert isinstance(find_tagger("auto", [tmp_path / "models"]), CaptionFileTagger)  # after wd14 and dd, found
    with pytest.raises(
        BackendUnavailable,
        match="No captionfile tagger found.*Needed: a folder with tags.csv. Put it in e.g. .*captions",
    ):
        find_tagger("captionfile", [tmp_path / "empty"])
    args = build_parser().parse_args(["prepare", "photos", "--out", "out", "--tagger", "captionfile"])
    assert args.tagger == "captionfile"
    monkeypatch.delitem(TAGGERS, "captionfile")
    assert find_tagger("auto", [tmp_path / "models"]) is None
    with pytest.raises(
        HeadshotError, match="Unknown tagger 'captionfile'; choose one of auto, wd14, deepdanbooru, none"
    ):
        find_tagger("captionfile", [tmp_path / "models"])


def test_importing_tagging_does_not_import_onnxruntime():
    shared = Path(__file__).resolve().parents[1] / "shared"
    code = "import sys, headshot.dataset.tagging; print('onnxruntime' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(shared)}
    )
    assert out.stdout.strip() == "False"
