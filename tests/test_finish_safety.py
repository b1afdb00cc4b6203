"""Issue 8 for `headshot generate` and `headshot finish`: trust nothing, lose nothing.

Inputs are never overwritten or re-encoded, every output is written atomically, results.json names
only files that exist, one bad file never aborts a batch, and every option is checked before any
model loads. The CLI runs in this process (`headshot.cli.main`) so a model loader can be replaced
by one that fails the test: that is how "before any model loads" is proved. Faces are real photos
(scikit-image's astronaut, insightface's pictures) seen by dlib's real models; the base models
and LoRAs are tiny random ones of the real architectures (tests/tiny_models.py).
"""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import tiny_models
from PIL import Image

from headshot.cli import main
from headshot.samples import astronaut_shots, insightface_image


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _results(out) -> list[dict]:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def _assert_every_image_exists(out) -> list[dict]:
    results = _results(out)
    for entry in results:
        if not entry.get("skipped"):
            assert (out / entry["image"]).is_file(), f"results.json names {entry['image']}, which does not exist"
    return results


@pytest.fixture
def no_models(monkeypatch):
    """Any model load fails the test: the options must have been refused before."""
    import headshot.faces
    import headshot.train.base_model_loading

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(headshot.faces, "load_face_analyzer", loaded)
    monkeypatch.setattr(headshot.train.base_model_loading, "load_base_model", loaded)


def _same_stem_folder(folder):
    folder.mkdir()
    shots = astronaut_shots()
    shots["astronaut_mirrored.jpg"].save(folder / "a.jpg", quality=92)
    shots["astronaut.png"].save(folder / "a.png")
    insightface_image("Tom_Hanks_54745.png").resize((448, 448)).save(folder / "b.png")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# --- item 3: never overwrite or lose -------------------------------------------------------------


def test_finish_into_the_input_folder_keeps_every_input_and_every_result(tmp_path, capsys):
    """a.jpg and a.png used to both become a.png, over the input; a second run finished its own outputs."""
    folder = tmp_path / "pictures"
    before = _same_stem_folder(folder)
    for run in (1, 2):
        code, out, err = _run(capsys, "finish", folder, "--out", folder, "--face-backend", "dlib", "--top", "1")
        assert code == 0, err
        assert {n: (folder / n).read_bytes() for n in before} == before, f"run {run} changed an input"
        results = _assert_every_image_exists(folder)
        assert sorted(os.path.basename(e["source"]) for e in results) == ["a.jpg", "a.png", "b.png"]
        assert len({e["image"] for e in results}) == 3
        for entry in results:  # each output holds its own input's pixels (nothing finished them over)
            source = np.asarray(Image.open(entry["source"]).convert("RGB"))
            assert np.array_equal(np.asarray(Image.open(folder / entry["image"]).convert("RGB")), source)


def test_a_file_we_did_not_write_in_out_is_never_replaced(tmp_path, capsys):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    astronaut_shots()["astronaut.png"].save(pictures / "a.png")
    out = tmp_path / "out"
    (out / "faceless").mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(out / "a.png")
    Image.new("RGB", (32, 32), "blue").save(out / "faceless" / "a-2.png")
    mine = {p: p.read_bytes() for p in out.rglob("*.png")}
    code, _, err = _run(capsys, "finish", pictures, "--out", out, "--face-backend", "dlib")
    assert code == 0, err
    assert {p: p.read_bytes() for p in mine} == mine
    assert [e["image"] for e in _assert_every_image_exists(out)] == ["a-3.png"]


def test_top_never_loses_a_result_and_results_name_files_that_exist(tmp_path, capsys):
    pictures = tmp_path / "pictures"
    _same_stem_folder(pictures)
    reference = tmp_path / "me.png"
    astronaut_shots()["astronaut_closeup.jpg"].save(reference)
    out = tmp_path / "out"
    for _run_number in (1, 2):  # the second run finds below_top/ and its files from the first
        code, stdout, err = _run(
            capsys, "finish", pictures, "--out", out, "--reference", reference, "--face-backend", "dlib", "--top", "1"
        )
        assert code == 0, err
        results = _assert_every_image_exists(out)
        assert len(results) == 3 and [e["rank"] for e in results] == [1, None, None]
        assert "/" not in results[0]["image"] and all(e["image"].startswith("below_top/") for e in results[1:])
        assert results[0]["image"] in stdout
    assert sorted(p.name for p in out.glob("*.png")) == [results[0]["image"]]  # no stale copy at the top


# --- item 4: atomic outputs, writable --out ------------------------------------------------------


def test_a_failed_write_leaves_the_previous_results_intact(tmp_path, capsys, monkeypatch):
    pictures = tmp_path / "pictures"
    _same_stem_folder(pictures)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "finish", pictures, "--out", out, "--face-backend", "dlib")
    assert code == 0, err
    assert all(Image.open(out / e["image"]).format == "PNG" for e in _results(out))
    assert Image.open(out / "contact_sheet.jpg").format == "JPEG"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    real_save = Image.Image.save

    def disk_full(self, fp, format=None, **params):
        if (format or "").upper() == "JPEG" or str(fp).endswith(".jpg"):
            with open(fp, "wb") as f:
                f.write(b"\xff\xd8\xff half a picture")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    code, _, err = _run(capsys, "finish", pictures, "--out", out, "--face-backend", "dlib")
    assert code == 1 and "disk is full" in err and err.count("\n") == 1
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before, "the previous results.json or contact sheet was damaged, or a temporary file was left"


@pytest.mark.parametrize("command", ["finish", "generate"])
def test_an_out_that_cannot_be_written_fails_before_any_model_loads(tmp_path, capsys, no_models, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = (
        ["finish", tmp_path]
        if command == "finish"
        else ["generate", "--style", "linkedin_corporate", "--base-model", tmp_path / "model"]
    )
    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    code, _, err = _run(capsys, *args, "--out", blocker / "results", "--face-backend", "dlib")
    assert code == 1 and "--out" in err and "cannot be written" in err and err.count("\n") == 1


# --- item 2: names that would become paths -------------------------------------------------------


@pytest.mark.parametrize(
    "option,value", [("--style", "../../../tmp/evil"), ("--trigger", "../x"), ("--class", "man/../../x")]
)
def test_path_like_names_are_refused_naming_the_option(tmp_path, capsys, no_models, option, value):
    args = {"--style": "linkedin_corporate", option: value}
    code, _, err = _run(
        capsys,
        "generate",
        *[x for kv in args.items() for x in kv],
        "--base-model",
        tmp_path / "model",
        "--out",
        tmp_path / "out",
    )
    assert code == 1 and option in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.png"))


# --- item 8: options checked before any model loads ----------------------------------------------

_GENERATE = ["generate", "--style", "linkedin_corporate", "--base-model", "{tmp}/model", "--out", "{tmp}/out"]
_FINISH = ["finish", "{tmp}/pictures", "--out", "{tmp}/out", "--face-backend", "dlib"]


@pytest.mark.parametrize(
    "base,extra,expected",
    [
        (_GENERATE, ["--seed", str(2**32)], "--seed 4294967296 is out of range"),
        (_GENERATE, ["--seed", "-1"], "--seed -1 is out of range"),
        (_GENERATE, ["--seed", str(2**32 - 2), "--count", "4"], "goes past"),
        (_GENERATE, ["--size", "500x512"], "not a multiple of 8"),
        (_GENERATE, ["--size", "100000x512"], "from 64 to 4096"),
        (_GENERATE, ["--count", "0"], "--count 0"),
        (_GENERATE, ["--top", "0"], "--top 0"),
        (_GENERATE, ["--denoise", "1.5"], "--denoise 1.5"),
        (_GENERATE, ["--style", "linkdin_corporate"], "Did you mean linkedin_corporate"),
        (_GENERATE, ["--lora", "{tmp}/nowhere/jane.safetensors"], "jane.safetensors: not found"),
        (_GENERATE, ["--reference", "{tmp}/no_photos"], "--reference"),
        (_FINISH, ["--top", "0"], "--top 0"),
        (_FINISH, ["--denoise", "-0.1"], "--denoise -0.1"),
        (_FINISH, ["--seed", str(2**40)], "--seed"),
        (_FINISH, ["--reference", "{tmp}/no_photos"], "--reference {tmp}/no_photos: not found"),
        (_FINISH, ["--identity", "{tmp}/jane.identity.json"], "--identity {tmp}/jane.identity.json: not found"),
        (_FINISH, ["--lora", "{tmp}/jane.safetensors"], "not found"),
    ],
)
def test_bad_options_fail_in_one_line_before_any_model_loads(tmp_path, capsys, no_models, base, extra, expected):
    (tmp_path / "pictures").mkdir()
    astronaut_shots()["astronaut.png"].save(tmp_path / "pictures" / "a.png")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in base + extra]
    code, _, err = _run(capsys, *argv)
    assert code == 1 and err.count("\n") == 1, err
    assert expected.replace("{tmp}", str(tmp_path)) in err
    assert "damaged" not in err


# --- item 8: a LoRA of another family ------------------------------------------------------------


def _kohya_lora(folder, family, path, metadata=True):
    """A LoRA file as `headshot train` writes it, for a tiny diffusers folder (random LoRA weights)."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from headshot.train.lora_conversion import peft_to_kohya
    from headshot.train.lora_files import save_lora
    from headshot.train.lora_metadata import kohya_metadata
    from headshot.train.lora_targets import kohya_unet_targets, text_encoder_targets

    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    modules = {"unet": unet}
    if family == "sdxl":
        modules["te1"] = CLIPTextModel.from_pretrained(folder / "text_encoder")
        modules["te2"] = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2")
    else:
        modules["te"] = CLIPTextModel.from_pretrained(folder / "text_encoder")
    tensors = {}
    torch.manual_seed(0)
    for component, module in modules.items():
        targets = kohya_unet_targets(module) if component == "unet" else text_encoder_targets(module)
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False), module)
        state = get_peft_model_state_dict(module)
        tensors.update(peft_to_kohya(family, component, state, 4, 4.0, targets, unet_config=unet.config))
    meta = (
        kohya_metadata(
            family=family,
            rank=4,
            alpha=4.0,
            output_name=path.stem,
            trigger="ohwx",
            class_word="woman",
            tag_frequency={},
            dataset_dirs={},
            training={},
            chosen_step=None,
            resolution=512,
        )
        if metadata
        else {}
    )
    save_lora(path, tensors, meta)
    return path


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    sd1, sdxl = tiny_models.make_tiny_sd1(root / "sd1"), tiny_models.make_tiny_sdxl(root / "sdxl")
    return {
        "sd1": sd1,
        "sdxl": sdxl,
        "sdxl_file": tiny_models.save_single_file(sdxl, root / "sdxl.safetensors", "sdxl"),
        "sd1_file": tiny_models.save_single_file(sd1, root / "sd1.safetensors", "sd1"),
        "sd1_lora": _kohya_lora(sd1, "sd1", root / "jane_sd1.safetensors"),
        "sdxl_lora": _kohya_lora(sdxl, "sdxl", root / "jane_sdxl.safetensors"),
        "sdxl_lora_bare": _kohya_lora(sdxl, "sdxl", root / "bare_sdxl.safetensors", metadata=False),
    }


@pytest.mark.parametrize(
    "lora,base,theirs,ours",
    [
        ("sdxl_lora", "sd1", "SDXL", "SD 1.x"),
        ("sdxl_lora_bare", "sd1_file", "SDXL", "SD 1.x"),  # no metadata: the te1/te2 keys say SDXL
        ("sd1_lora", "sdxl", "SD 1.x", "SDXL"),
        ("sd1_lora", "sdxl_file", "SD 1.x", "SDXL"),
    ],
)
def test_a_lora_of_another_family_is_refused_naming_both_before_the_model_loads(
    families, tmp_path, capsys, no_models, lora, base, theirs, ours
):
    code, _, err = _run(
        capsys,
        "generate",
        "--style",
        "linkedin_corporate",
        "--base-model",
        families[base],
        "--lora",
        families[lora],
        "--out",
        tmp_path / "out",
        "--size",
        "64x64",
    )
    assert code == 1 and err.count("\n") == 1, err
    assert f"is a {theirs} LoRA" in err and f"is {ours}" in err and families[lora].name in err


def test_a_lora_of_the_same_family_passes_the_check(families):
    from headshot.families import check_lora_families, lora_families

    check_lora_families([families["sd1_lora"]], families["sd1"])
    check_lora_families([families["sd1_lora"]], families["sd1_file"])
    check_lora_families([families["sdxl_lora_bare"]], families["sdxl_file"])
    assert lora_families(families["sd1_lora"]) == {"sd1"} and lora_families(families["sdxl_lora"]) == {"sdxl"}


# --- item 9: one bad file never aborts a batch ---------------------------------------------------


def test_one_bad_file_never_aborts_the_batch(tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    shots = astronaut_shots()
    shots["astronaut.png"].save(folder / "good.png")
    shots["astronaut_mirrored.jpg"].save(folder / "broken.jpg")
    (folder / "broken.jpg").write_bytes((folder / "broken.jpg").read_bytes()[:1500])  # cut short
    (folder / "notes.txt").write_text("not a picture")
    os.mkfifo(folder / "pipe.png")
    os.symlink("loop.png", folder / "loop.png")  # a link to itself
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as f:  # not UTF-8
        shots["astronaut_closeup.jpg"].save(f, format="PNG")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "finish", folder, "--out", out, "--face-backend", "dlib")
    assert code == 0, err
    results = _assert_every_image_exists(out)
    reasons = {os.path.basename(e["source"]): e["reason"] for e in results if e.get("skipped")}
    assert reasons == {
        "broken.jpg": "unreadable",
        "notes.txt": "not_an_image",
        "pipe.png": "not_a_file",
        "loop.png": "unreadable",
    }
    finished = sorted(e["image"] for e in results if not e.get("skipped"))
    assert finished == ["caf\ufffd.png", "good.png"]
    assert "4 skipped" in stdout and all(name in stdout for name in reasons)
