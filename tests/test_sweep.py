"""`headshot sweep`: the grid and --runs files, and a real sweep on the tiny SD1 model (two runs of two
steps at 64 px, one picture each) that records every run and the baseline, reuses finished runs when run
again, and resumes a sweep whose second run failed."""

from __future__ import annotations

import json

import pytest
import tiny_models

from headshot.cli import main
from headshot.errors import HeadshotError
from headshot.evaluate.sweep_grid import expand_grid, parse_values, read_runs_file, run_label
from headshot.evaluate.sweep_progress import SweepProgress, eta_text
from headshot.samples import astronaut_shots
from headshot.train import job_reuse


def test_comma_lists_form_a_grid_in_setting_order():
    lists = {"lr": parse_values("1e-4,5e-4", "lr"), "rank": parse_values("4, 16", "rank")}
    assert expand_grid(lists) == [
        {"lr": 1e-4, "rank": 4},
        {"lr": 1e-4, "rank": 16},
        {"lr": 5e-4, "rank": 4},
        {"lr": 5e-4, "rank": 16},
    ]
    assert parse_values("ohwx,sks", "trigger") == ["ohwx", "sks"]
    assert run_label({"lr": 1e-4, "rank": 16, "trigger": "sks"}) == "lr0.0001-r16-tsks"


@pytest.mark.parametrize(
    "key, text, code",
    [
        ("lr", "0,1e-4", "bad_option"),
        ("lr", "-1e-4", "bad_option"),
        ("lr", "1e-4,,5e-4", "bad_option"),
        ("lr", "fast", "bad_option"),
        ("lr", "1e-4,1e-4", "bad_option"),
        ("rank", "0", "bad_option"),
        ("rank", "4.5", "bad_option"),
        ("alpha", "0", "bad_option"),
        ("steps", "0", "bad_option"),
        ("trigger", "two words", "invalid_trigger"),
    ],
)
def test_bad_values_are_refused_with_their_option(key, text, code):
    with pytest.raises(HeadshotError) as caught:
        parse_values(text, key)
    assert caught.value.code == code


def test_runs_files_in_toml_and_json_list_exact_combinations(tmp_path):
    toml = tmp_path / "runs.toml"
    toml.write_text('[[runs]]\nlr = 1e-4\nrank = 4\n\n[[runs]]\nlr = 5e-4\nsteps = 300\ntrigger = "sks"\n')
    assert read_runs_file(toml) == [{"lr": 1e-4, "rank": 4}, {"lr": 5e-4, "steps": 300, "trigger": "sks"}]
    listed = tmp_path / "runs.json"
    listed.write_text(json.dumps([{"lr": 1e-4, "alpha": 8}]))
    assert read_runs_file(listed) == [{"lr": 1e-4, "alpha": 8.0}]
    for text, words in [
        ('[{"lr": 1e-4, "rnak": 4}]', "did you mean 'rank'"),
        ('[{"lr": 1e-4}, {"lr": 1e-4}]', "the same settings"),
        ('{"runs": []}', "non-empty list"),
        ("[{", "cannot be read"),
    ]:
        listed.write_text(text)
        with pytest.raises(HeadshotError, match=words) as caught:
            read_runs_file(listed)
        assert caught.value.code == "invalid_runs_file"
    listed.write_text('[{"lr": 0}]')
    with pytest.raises(HeadshotError, match="above 0") as caught:
        read_runs_file(listed)
    assert caught.value.code == "bad_option"


def test_eta_comes_from_the_pace_of_work_done_here_not_from_reused_work():
    now = [0.0]
    lines = []
    progress = SweepProgress(100, lambda f, m, eta: lines.append((f, eta)), clock=lambda: now[0])
    progress.skip(50, "reused")
    assert lines[-1] == (0.5, None)
    now[0] = 10.0
    progress.advance(10, "worked", force=True)  # 10 units in 10 s; 40 left
    assert lines[-1] == (0.6, 40.0)
    assert eta_text(40.0) == "eta 0m40s" and eta_text(None) == "eta --"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep_kit")
    base = tiny_models.make_tiny_sd1(root / "sd1")
    subset = root / "data" / "img" / "10_ohwx woman"
    subset.mkdir(parents=True)
    for i, name in enumerate(["astronaut.png", "astronaut_closeup.jpg"]):
        astronaut_shots()[name].convert("RGB").resize((128, 128)).save(subset / f"{i}.png")
        (subset / f"{i}.txt").write_text("ohwx woman, smile")
    return {"base": base, "data": root / "data"}


def _sweep_args(tiny, out, *extra):
    return [
        "sweep",
        str(tiny["data"]),
        "--base-model",
        str(tiny["base"]),
        "--lr",
        "1e-4,1e-3",
        "--steps",
        "2",
        "--rank",
        "4",
        "--resolution",
        "64",
        "--count",
        "1",
        "--size",
        "64x64",
        "--sample-steps",
        "2",
        "--device",
        "cpu",
        "--face-backend",
        "dlib",
        "--out",
        str(out),
        *extra,
    ]


def test_options_are_checked_before_any_model_loads(tiny, tmp_path, capsys):
    for extra, code in [
        (["--lr", "0"], "bad_option"),
        (["--rank", "0"], "bad_option"),
        (["--size", "65x64"], "bad_option"),
        (["--styles", "no_such_style"], "unknown_style"),
    ]:
        args = _sweep_args(tiny, tmp_path / "out")
        for option, value in zip(extra[::2], extra[1::2]):
            if option in args:
                args[args.index(option) + 1] = value
            else:
                args += [option, value]
        assert main(args) == 1
        assert f"error ({code})" in capsys.readouterr().err
    out_file = tmp_path / "a_file"
    out_file.write_text("mine")
    args = _sweep_args(tiny, out_file)
    assert main(args) == 1 and "error (not_a_folder)" in capsys.readouterr().err


def test_a_sweep_records_every_run_reuses_them_and_resumes_after_a_failure(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    launched = []
    real_start = job_reuse.start_training

    def spy(settings, *args, **kwargs):
        launched.append(settings.lr)
        if len(launched) == 2:  # the second run fails once, as a crash or a full disk would
            raise HeadshotError("simulated failure", "training_failed")
        return real_start(settings, *args, **kwargs)

    monkeypatch.setattr(job_reuse, "start_training", spy)
    assert main(_sweep_args(tiny, out)) == 1
    first = json.loads((out / "sweep.json").read_text())
    assert [run["state"] for run in first["runs"]] == ["done", "failed"]
    assert first["runs"][1]["error_code"] == "training_failed"
    assert first["baseline"]["lora"] is None and set(first["baseline"]["metrics"]) >= {
        "images",
        "face_distance_mean",
        "clip_score_mean",
        "faceless_count",
    }
    assert "eta" in capsys.readouterr().err

    assert main(_sweep_args(tiny, out)) == 0  # resumes: only the failed run trains
    assert launched == [1e-4, 1e-3, 1e-3]
    second = json.loads((out / "sweep.json").read_text())
    for run, lr in zip(second["runs"], (1e-4, 1e-3)):
        assert run["state"] == "done" and run["settings"]["lr"] == lr and run["settings"]["rank"] == 4
        assert run["settings"]["steps"] == 2 and run["settings"]["alpha"] is not None
        assert (out / run["lora"]).is_file() and (out / run["job"] / "job.json").is_file()
        assert run["metrics"]["images"] == 1 and isinstance(run["final_loss"], float)
        assert (out / run["evaluation"]).is_file()
    assert second["runs"][0]["train_seconds"] == first["runs"][0]["train_seconds"]
    # the sweep ends with its report, rewritten (never refused) when the sweep runs again
    report = (out / "report" / "report.html").read_text()
    assert "baseline" in report.lower() and (out / "report" / "report.pdf").read_bytes().startswith(b"%PDF")
    checkpoints = sorted(p for p in out.rglob("*.safetensors"))

    assert main(_sweep_args(tiny, out)) == 0  # everything finished: nothing trains or draws again
    assert launched == [1e-4, 1e-3, 1e-3]
    third = json.loads((out / "sweep.json").read_text())
    assert [r["train_seconds"] for r in third["runs"]] == [r["train_seconds"] for r in second["runs"]]
    assert [r["metrics"] for r in third["runs"]] == [r["metrics"] for r in second["runs"]]
    assert sorted(p for p in out.rglob("*.safetensors")) == checkpoints
    assert "reused" in capsys.readouterr().err
    assert (out / "report" / "report.pdf").stat().st_size > 0


def test_a_trigger_variant_is_the_dataset_with_its_trigger_word_replaced(tiny, tmp_path):
    from headshot.sweep.variants import trigger_variant
    from headshot.train.dataset import load_training_set

    variant = load_training_set(trigger_variant(tiny["data"], tmp_path / "sks", "ohwx", "sks"))
    original = load_training_set(tiny["data"])
    assert variant.trigger == "sks" and variant.class_word == "woman"
    assert [i.caption for i in variant.images] == ["sks woman, smile"] * len(original.images)
    assert [i.subset for i in variant.images] == ["10_sks woman"] * len(original.images)
    assert [i.path.read_bytes() for i in variant.images] == [i.path.read_bytes() for i in original.images]


def test_prompts_file_lines_name_the_subject(tmp_path):
    from headshot.sweep.pictures import prompt_text
    from headshot.sweep.plan import read_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# studio set\nportrait of {subject} in a suit\n\nheadshot, soft light\n")
    lines = read_prompts(prompts)
    assert [prompt_text(line, "ohwx", "woman") for line in lines] == [
        "portrait of ohwx woman in a suit",
        "ohwx woman, headshot, soft light",
    ]


def test_a_sweep_on_a_checkpoint_saved_without_a_vae_trains_and_draws_with_its_vae_file(tiny, tmp_path, capsys):
    """Where the VAE file goes (every run's training, the pictures' sampler, the folders' keys); training and drawing
    with one are tested in tests/test_vae_file.py, a whole sweep just above."""
    import shutil

    import torch
    from safetensors.torch import load_file
    from tiny_single_files import save_single_file, save_without_vae

    from headshot.sweep.plan import SweepOptions, plan_sweep
    from headshot.sweep.runner import SweepModels

    whole = save_single_file(tiny["base"], tmp_path / "whole.safetensors", "sd1")
    vae, other = tmp_path / "vae.safetensors", tmp_path / "other_vae.safetensors"
    bare = save_without_vae(whole, tmp_path / "bare.safetensors", vae, vae_scale=0.5)
    shutil.copy(vae, other)
    assert main(_sweep_args({**tiny, "base": bare}, tmp_path / "out")) == 1  # refused before any model loads
    assert "error (checkpoint_without_vae)" in capsys.readouterr().err

    def plan(vae_file):
        runs = [{"lr": 1e-4}, {"lr": 1e-3}]
        return plan_sweep(SweepOptions(tiny["data"], str(bare), tmp_path / "out", runs, vae=str(vae_file)))

    with_vae, with_other = plan(vae), plan(other)
    assert [run.train.vae for run in with_vae.runs] == [str(vae)] * 2
    assert with_vae.pictures_key != with_other.pictures_key
    assert {run.name for run in with_vae.runs}.isdisjoint(run.name for run in with_other.runs)
    drawn_with = SweepModels(with_vae).sampler.base.vae.state_dict()["encoder.conv_in.weight"]
    assert torch.equal(drawn_with, load_file(str(vae))["encoder.conv_in.weight"])
