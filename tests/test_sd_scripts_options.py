"""sd-scripts' real option names and dataset-config keys (recorded by tools/record_sd_scripts_options.py
into tests/sd_scripts_options.json) against the TOMLs we write; with SD_SCRIPTS_PATH, its own parsers read them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from test_sd_scripts import RECORDED, SD_SCRIPTS_OPTIONS, _config, tomllib

from headshot.families import get_family
from headshot.train import sd_scripts


def test_recorded_option_list_names_its_source():
    assert RECORDED["source"] == "kohya-ss/sd-scripts" and len(RECORDED["commit"]) == 40
    # the import reading is authoritative; when it ran, the ast reading had to agree with it
    assert RECORDED["method"] == "ast" or RECORDED["ast_agrees"] is True
    assert {"save_state", "resume", "skip_until_initial_step", "save_last_n_steps_state"} <= SD_SCRIPTS_OPTIONS


def test_dataset_toml_uses_only_real_dataset_config_keys(tmp_path):
    from headshot.dataset import kohya

    path = kohya.write_dataset_toml(tmp_path / "dataset.toml", tmp_path / "10_ohwx woman", "ohwx woman", 10, 512)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data == kohya.dataset_config(tmp_path / "10_ohwx woman", "ohwx woman", 10, 512)
    schema = RECORDED["dataset_config"]
    assert set(data) == {"general", "datasets"}
    assert set(data["general"]) <= set(schema["general"]), set(data["general"]) - set(schema["general"])
    dataset = data["datasets"][0]
    assert set(dataset) - {"subsets"} <= set(schema["datasets"])
    assert set(dataset["subsets"][0]) <= set(schema["subsets"])
    assert "image_dir" in dataset["subsets"][0]  # Required() in config_util's DreamBooth subset schema


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_sd_scripts_toml_reader_reads_our_files_as_written(tmp_path, family):
    """sd-scripts reads both files with the `toml` package (train_util.read_config_from_file,
    config_util.load_user_config), not tomllib: it must see exactly what we wrote."""
    import toml

    from headshot.dataset import kohya

    subset = tmp_path / '10_ohwx "quoted" ü'
    dataset = kohya.write_dataset_toml(tmp_path / "dataset.toml", subset, "ohwx woman", 10, 512)
    config = _config(tmp_path, family, extra={"training_comment": 'line\nbreak "quotes" \\ tab\t\x7f'})
    written = sd_scripts.write_config(config, tmp_path / "cfg.toml")
    for path, data in ((dataset, kohya.dataset_config(subset, "ohwx woman", 10, 512)), (written, config)):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# Written by Headshot Studio")
        assert toml.loads(text) == tomllib.loads(text) == data


# Parses our two TOMLs the way train_network.py does (read_config_from_file, prepare_dataset_args,
# ConfigSanitizer + BlueprintGenerator), with the checkout's own code.
_PARSE_PROBE = r"""
import importlib, json, sys
sys.path.insert(0, ".")
script, cfg_path = sys.argv[1:3]
parser = importlib.import_module(script[:-3]).setup_parser()
from library import config_util, train_util
import toml
sys.argv = [script, "--config_file", cfg_path]
args = train_util.read_config_from_file(parser.parse_args(), parser)
unknown = sorted(set(toml.load(cfg_path)) - {a.dest for a in parser._actions})
train_util.prepare_dataset_args(args, True)
user = config_util.load_user_config(args.dataset_config)
bp = config_util.BlueprintGenerator(config_util.ConfigSanitizer(True, True, False, True)).generate(user, args)
sub = bp.dataset_group.datasets[0].subsets[0].params
print("PARSED " + json.dumps({"unknown": unknown, "resolution": list(args.resolution), "repeats": sub.num_repeats,
                              "caption_extension": sub.caption_extension, "save_state": args.save_state}))
"""


@pytest.mark.skipif(not os.environ.get("SD_SCRIPTS_PATH"), reason="SD_SCRIPTS_PATH (an sd-scripts checkout) not set")
@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_our_tomls_parse_with_a_real_checkout(tmp_path, family):
    """With SD_SCRIPTS_PATH (and SD_SCRIPTS_PYTHON, or the checkout's venv): its own parsers read our files."""
    import subprocess

    from headshot.dataset import kohya

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import record_sd_scripts_options

    repo = Path(os.environ["SD_SCRIPTS_PATH"])
    (tmp_path / "data").mkdir()
    kohya.write_dataset_toml(tmp_path / "data" / "dataset.toml", tmp_path / "10_ohwx woman", "ohwx woman", 10, 512)
    cfg = _config(tmp_path, family, mixed_precision="no")
    path = sd_scripts.write_config(cfg, tmp_path / "cfg.toml")
    script = get_family(family).sd_scripts_script
    assert set(cfg) <= set(record_sd_scripts_options.by_ast(repo)["scripts"][script])
    setup = sd_scripts.locate(repo, os.environ.get("SD_SCRIPTS_PYTHON"))
    run = subprocess.run(
        [str(setup.python), "-c", _PARSE_PROBE, script, str(path)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
    )
    parsed = [json.loads(line[7:]) for line in run.stdout.splitlines() if line.startswith("PARSED ")]
    assert parsed, run.stderr[-3000:]
    size = cfg["resolution"].split(",")
    assert parsed[0] == {
        "unknown": [],
        "resolution": [int(size[0]), int(size[1])],
        "repeats": 10,
        "caption_extension": ".txt",
        "save_state": True,
    }
