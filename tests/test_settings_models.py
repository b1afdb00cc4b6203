"""Settings as validated data: unknown keys refused with a "did you mean", wrong kinds named by option,
the CLI's options are the settings' fields, and the TOML writer's output reads back as written."""

from __future__ import annotations

import json

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest

from headshot.cli import build_parser
from headshot.cli.train import chosen_settings
from headshot.dataset.prepare_settings import PrepareSettings
from headshot.errors import HeadshotError
from headshot.outputs import toml_text, write_toml
from headshot.train.job import JobFolder
from headshot.train.settings import TrainSettings

BASE = {"dataset_dir": "/data", "base_model": "model.safetensors", "out_dir": "/out"}


def test_an_unknown_training_setting_is_refused_with_a_did_you_mean():
    with pytest.raises(HeadshotError) as caught:
        TrainSettings.from_dict({**BASE, "stesp": 400})
    assert caught.value.code == "unknown_option"
    assert "'stesp'" in str(caught.value) and "did you mean 'steps'?" in str(caught.value)
    with pytest.raises(HeadshotError, match="known settings: dataset_dir, base_model"):
        TrainSettings(**BASE, zzzz=1)  # nothing close: the list of settings instead


def test_an_unknown_prepare_setting_is_refused_with_a_did_you_mean():
    with pytest.raises(HeadshotError) as caught:
        PrepareSettings.from_dict({"triger": "ohwx"})
    assert caught.value.code == "unknown_option" and "did you mean 'trigger'?" in str(caught.value)


def test_a_job_json_with_an_unknown_setting_fails_the_job_saying_which(tmp_path):
    """A job record is data: a key no version of TrainSettings has is named, not silently dropped."""
    from headshot.train.worker import run_job

    job = JobFolder(tmp_path / "job")
    job.path.mkdir()
    job.write({"state": "queued", "settings": {**BASE, "validaton_images": 2}})
    assert run_job(job) == 1
    record = job.read()
    assert record["state"] == "failed" and record["error_code"] == "unknown_option"
    assert "'validaton_images'" in record["error"] and "did you mean 'validation_images'?" in record["error"]


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("steps", "400", "--steps '400': must be a whole number"),
        ("steps", True, "--steps True: must be a whole number"),
        ("alpha", "big", "--alpha 'big': must be a number"),
        ("flip", "no", "--no-flip 'no': must be true or false"),
        ("tokenizer_dirs", "one/folder", "--tokenizer 'one/folder': must be a list of folders"),
        ("steps", 0, "--steps 0: must be at least 1"),
    ],
)
def test_a_value_of_the_wrong_kind_names_the_option(field, value, words):
    with pytest.raises(HeadshotError) as caught:
        TrainSettings(**{**BASE, field: value})
    assert caught.value.code == "bad_option" and str(caught.value) == words


def test_settings_round_trip_through_a_job_record(tmp_path):
    settings = TrainSettings(**{**BASE, "dataset_dir": tmp_path}, steps=40, face_model_dirs=[tmp_path])
    assert settings.dataset_dir == str(tmp_path) and settings.face_model_dirs == [str(tmp_path)]
    record = json.loads(json.dumps(settings.to_dict()))
    assert TrainSettings.from_dict(record) == settings


def test_every_train_option_is_a_settings_field_and_builds_settings_as_given(tmp_path):
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    # --resume and --single-photo are modes, not settings; --single-photo's dataset words are prepare's settings
    dests = {a.dest for a in train._actions} - {"help", "resume", "run", "single_photo"}
    for_the_dataset = {"trigger", "class_word"}
    assert for_the_dataset <= set(PrepareSettings.field_names())
    dests -= for_the_dataset
    assert dests <= set(TrainSettings.field_names()), dests - set(TrainSettings.field_names())
    args = parser.parse_args(
        [
            "train",
            str(tmp_path),
            "--base-model",
            "m.safetensors",
            "--out",
            str(tmp_path / "o"),
            "--name",
            "zoe",
            "--steps",
            "12",
            "--no-flip",
            "--no-half-vae",
            "--tokenizer",
            "t",
            "--sd-scripts",
            "s",
        ]
    )
    chosen = chosen_settings(args)
    assert chosen == {
        "dataset_dir": tmp_path,
        "base_model": "m.safetensors",
        "out_dir": tmp_path / "o",
        "output_name": "zoe",
        "steps": 12,
        "flip": False,
        "no_half_vae": True,
        "tokenizer_dirs": ["t"],
        "sd_scripts_repo": "s",
    }
    settings = TrainSettings(**chosen)
    assert (settings.out_dir, settings.flip, settings.preset) == (str(tmp_path / "o"), False, "balanced")


def test_every_prepare_option_is_a_settings_field(tmp_path):
    from headshot.cli.prepare import _prepare_settings

    parser = build_parser()
    prepare = parser._subparsers._group_actions[0].choices["prepare"]
    dests = {a.dest for a in prepare._actions} - {"help", "run", "input_dir", "out", "single_photo"}  # a mode
    assert dests <= set(PrepareSettings.field_names()), dests - set(PrepareSettings.field_names())
    args = parser.parse_args(
        [
            "prepare",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--min-face",
            "80",
            "--keep",
            "a.jpg",
            "--face-models",
            str(tmp_path),
            "--tagger-models",
            str(tmp_path),
        ]
    )
    settings = _prepare_settings(args)
    assert (settings.min_face_px, settings.keep, settings.face_model_dirs, settings.tagger_dirs) == (
        80,
        {"a.jpg"},
        [tmp_path],
        [tmp_path],
    )


def test_the_toml_writer_reads_back_as_written(tmp_path):
    data = {
        "name": 'quote " backslash \\ newline \n del \x7f ü',
        "n": 3,
        "x": 1e-05,
        "flag": False,
        "list": ["a=1", "b=2"],
        "path": tmp_path,
        "left_out": None,
        "table": {"k": 1, "nested": {"deep": True}},
        "tables": [{"a": 1, "inner": [{"b": 2}]}],
    }
    path = write_toml(tmp_path / "c.toml", data, comment="two\nlines")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# two\n# lines\n")
    expected = {**{k: v for k, v in data.items() if k != "left_out"}, "path": str(tmp_path)}
    assert tomllib.loads(text) == expected
    with pytest.raises(HeadshotError) as caught:
        toml_text({"when": object()})
    assert caught.value.code == "bad_option"
