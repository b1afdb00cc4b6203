"""The optional kohya sd-scripts backend: config TOML, command line, progress parsing, the subprocess.

sd-scripts itself is not installed here: run() is tested against a fake checkout made in tmp_path whose
train_network.py prints what the real one prints (a tqdm bar with \\r redraws, "saving checkpoint: …",
a traceback) and writes a .safetensors file.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from sd_scripts_standin import FAKE_TRAINER, _fake_checkout  # noqa: F401  (test_train_jobs imports them from here)

from headshot.errors import BackendUnavailable, HeadshotError
from headshot.families import get_family
from headshot.train import sd_scripts
from headshot.train.sd_scripts import SdScriptsSetup

# Option names recorded from sd-scripts' own argparse and config_util by tools/record_sd_scripts_options.py
# (the commit is in the file; rerun the tool against a newer checkout to update it)
RECORDED = json.loads((Path(__file__).with_name("sd_scripts_options.json")).read_text(encoding="utf-8"))
SD_SCRIPTS_OPTIONS = set(RECORDED["scripts"]["train_network.py"])
SDXL_OPTIONS = set(RECORDED["scripts"]["sdxl_train_network.py"])


def _config(tmp_path: Path, family: str = "sd1", **over) -> dict:
    args = dict(
        family=family,
        base_model=tmp_path / "model.safetensors",
        dataset_toml=tmp_path / "data" / "dataset.toml",
        out_dir=tmp_path / "out",
        output_name="jane_lora",
        steps=800,
        rank=16,
        alpha=8.0,
        lr=1e-4,
        text_encoder_lr=None,
        optimizer="AdamW",
        scheduler="cosine",
        warmup_steps=40,
        seed=42,
        mixed_precision="fp16",
        gradient_checkpointing=True,
        cache_latents=True,
        min_snr_gamma=5.0,
        noise_offset=0.05,
        save_every_n_steps=200,
        resolution=512 if family != "sdxl" else 1024,
        tokenizer_cache_dir=tmp_path / "tok",
    )
    args.update(over)
    return sd_scripts.training_config(**args)


def _roundtrip(config: dict, path: Path) -> dict:
    written = sd_scripts.write_config(config, path)
    assert written == path
    with path.open("rb") as fh:
        return tomllib.load(fh)


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_config_round_trips_and_uses_only_real_option_names(tmp_path, family):
    config = _config(tmp_path, family)
    loaded = _roundtrip(config, tmp_path / "cfg.toml")
    assert loaded == config
    known = SDXL_OPTIONS if family == "sdxl" else SD_SCRIPTS_OPTIONS
    assert set(loaded) <= known, sorted(set(loaded) - known)

    assert loaded["caption_extension"] == ".txt"
    assert loaded["network_train_unet_only"] is True
    assert "text_encoder_lr" not in loaded
    assert loaded["network_module"] == "networks.lora"
    assert loaded["save_model_as"] == "safetensors"
    assert loaded["network_dim"] == 16 and loaded["network_alpha"] == 8.0
    assert loaded["unet_lr"] == loaded["learning_rate"] == 1e-4
    assert loaded["max_train_steps"] == 800 and loaded["save_every_n_steps"] == 200
    assert loaded["max_data_loader_n_workers"] == 0
    assert loaded["persistent_data_loader_workers"] is False
    assert loaded["mixed_precision"] == "fp16"
    # config values skip argparse's type=, and prepare_dataset_args splits resolution on ","
    size = 512 if family == "sd1" else 1024
    assert loaded["resolution"] == f"{size},{size}"
    for key in ("output_dir", "dataset_config", "tokenizer_cache_dir", "pretrained_model_name_or_path"):
        assert Path(loaded[key]).is_absolute()
    if family == "sdxl":
        assert loaded["no_half_vae"] is True
    assert get_family(family).sd_scripts_script == ("sdxl_train_network.py" if family == "sdxl" else "train_network.py")


def test_config_text_encoder_optimizers_and_extra(tmp_path):
    config = _config(
        tmp_path,
        text_encoder_lr=5e-5,
        optimizer="prodigy",
        scheduler="constant",
        warmup_steps=10,
        mixed_precision="fp32",
        min_snr_gamma=None,
        noise_offset=None,
        save_every_n_steps=None,
        tokenizer_cache_dir=None,
        extra={"clip_skip": 2, "seed": None, "training_comment": 'hi "there"\n\x7f'},
    )
    loaded = _roundtrip(config, tmp_path / "c.toml")
    assert loaded == config
    assert set(loaded) <= SD_SCRIPTS_OPTIONS
    assert loaded["text_encoder_lr"] == 5e-5 and "network_train_unet_only" not in loaded
    assert loaded["optimizer_type"] == "Prodigy" and all("=" in a for a in loaded["optimizer_args"])
    assert loaded["lr_scheduler"] == "constant_with_warmup"  # plain "constant" refuses a warmup
    assert loaded["mixed_precision"] == "no"
    assert loaded["clip_skip"] == 2 and "seed" not in loaded
    assert loaded["training_comment"] == 'hi "there"\n\x7f'
    for key in ("min_snr_gamma", "noise_offset", "save_every_n_steps", "tokenizer_cache_dir"):
        assert key not in loaded
    assert _config(tmp_path, optimizer="adamw8bit")["optimizer_type"] == "AdamW8bit"


def test_config_refusals(tmp_path):
    with pytest.raises(HeadshotError, match="optimizer"):
        _config(tmp_path, optimizer="SGD")
    with pytest.raises(HeadshotError, match="family"):
        _config(tmp_path, family="flux")
    with pytest.raises(HeadshotError, match="GPU"):
        _config(tmp_path, device="cpu", mixed_precision="fp16")
    cpu = _config(tmp_path, device="cpu", mixed_precision="bf16", attention="xformers")
    assert cpu["sdpa"] is True and cpu["xformers"] is False
    with pytest.raises(HeadshotError, match=r"\.toml"):
        sd_scripts.write_config({"a": 1}, tmp_path / "config.txt")


# --- locate / command ----------------------------------------------------------------------------


def test_locate_errors_and_venv(tmp_path):
    with pytest.raises(BackendUnavailable, match="not found"):
        sd_scripts.locate(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BackendUnavailable, match="not a folder"):
        sd_scripts.locate(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackendUnavailable, match="train_network.py is missing"):
        sd_scripts.locate(empty)
    repo = _fake_checkout(tmp_path, "")
    with pytest.raises(BackendUnavailable, match="no Python venv"):
        sd_scripts.locate(repo)
    with pytest.raises(BackendUnavailable, match="not found"):
        sd_scripts.locate(repo, python=tmp_path / "missing" / "python")
    with pytest.raises(BackendUnavailable, match="folder"):
        sd_scripts.locate(repo, python=tmp_path)
    if os.name != "nt":
        not_exec = tmp_path / "python-noexec"
        not_exec.write_text("")
        not_exec.chmod(0o644)
        with pytest.raises(BackendUnavailable, match="not executable"):
            sd_scripts.locate(repo, python=not_exec)
        venv_python = repo / "venv" / "bin" / "python"
        venv_python.parent.mkdir(parents=True)
        venv_python.symlink_to(sys.executable)
        setup = sd_scripts.locate(repo)
        assert setup.python == venv_python  # the venv's link, not the interpreter it points to
        assert setup.repo == repo.resolve()

    setup = sd_scripts.locate(repo, python=sys.executable)
    cfg = tmp_path / "c.toml"
    assert sd_scripts.command(setup, "sd1", cfg) == [
        sys.executable,
        str(repo / "train_network.py"),
        "--config_file",
        str(cfg),
    ]
    assert sd_scripts.command(setup, "SDXL", cfg)[1] == str(repo / "sdxl_train_network.py")
    (repo / "sdxl_train_network.py").unlink()
    with pytest.raises(BackendUnavailable, match="sdxl_train_network.py"):
        sd_scripts.command(setup, "sdxl", cfg)
    with pytest.raises(HeadshotError, match=r"\.toml"):
        sd_scripts.command(setup, "sd1", tmp_path / "c.cfg")


# --- run -----------------------------------------------------------------------------------------


@pytest.fixture
def fake(tmp_path):
    repo = _fake_checkout(tmp_path, FAKE_TRAINER)
    setup = SdScriptsSetup(repo=repo, python=Path(sys.executable))
    out = tmp_path / "out"
    config = _config(tmp_path, steps=5, save_every_n_steps=2)
    return setup, config, out


def test_run_streams_events_in_order(fake):
    setup, config, out = fake
    events = []
    final = sd_scripts.run(setup, "sd1", config, out, events.append, env={"FAKE_MODE": "ok"})
    assert final == out / "jane_lora.safetensors" and final.read_bytes() == b"fake lora"
    log = (out / sd_scripts.LOG_NAME).read_text()
    assert "saving checkpoint" in log and "model saved." in log and "# exit code 0" in log
    assert f"cwd {setup.repo}" in log  # ran in the checkout
    assert (out / sd_scripts.CONFIG_NAME).is_file()

    parsed = [e for e in events if e["type"] != "log"]
    steps = [e["step"] for e in parsed if e["type"] == "step"]
    assert steps == [0, 1, 2, 3, 4, 5]
    assert [e["type"] for e in parsed][:2] == ["epoch", "step"]
    checkpoints = [e for e in parsed if e["type"] == "checkpoint"]
    assert [Path(c["path"]).name for c in checkpoints] == [
        "jane_lora-step00000002.safetensors",
        "jane_lora-step00000004.safetensors",
        "jane_lora.safetensors",
    ]
    assert [c["final"] for c in checkpoints] == [False, False, True]
    # checkpoint 2 comes after step 2 and before step 3
    order = [(e["type"], e.get("step")) for e in parsed if e["type"] in ("step", "checkpoint")]
    assert order.index(("checkpoint", 2)) == order.index(("step", 2)) + 1
    assert parsed[-1]["type"] == "checkpoint"
    step5 = [e for e in parsed if e.get("step") == 5 and e["type"] == "step"][0]
    assert step5["loss"] == pytest.approx(0.2) and step5["it_per_s"] == 2.0
    # each parsed event directly follows the raw line it came from
    for i, e in enumerate(events):
        if e["type"] != "log":
            assert events[i - 1]["type"] == "log"
            assert sd_scripts.parse_progress(events[i - 1]["line"])["type"] == e["type"]


def test_run_failure_raises_with_traceback(fake):
    setup, config, out = fake
    events = []
    with pytest.raises(HeadshotError) as info:
        sd_scripts.run(setup, "sd1", config, out, events.append, env={"FAKE_MODE": "fail"})
    err = info.value
    assert err.code == "training_failed"
    assert "ValueError: boom at step 2" in str(err)
    assert "Traceback (most recent call last)" in str(err)
    assert str(out / sd_scripts.LOG_NAME) in str(err)
    assert {"type": "error", "message": "ValueError: boom at step 2"} in events
    assert "boom at step 2" in (out / sd_scripts.LOG_NAME).read_text()


def test_run_missing_output(fake):
    setup, config, out = fake
    with pytest.raises(HeadshotError) as info:
        sd_scripts.run(setup, "sd1", config, out, lambda e: None, env={"FAKE_MODE": "nofile"})
    assert info.value.code == "training_output_missing"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.mark.parametrize("mode", ["hang", "stubborn"])
def test_run_cancel_stops_the_process(fake, monkeypatch, mode):
    if mode == "stubborn" and os.name == "nt":
        pytest.skip("SIGTERM cannot be ignored on Windows")
    monkeypatch.setattr(sd_scripts, "TERMINATE_GRACE_S", 1.0)
    setup, config, out = fake
    cancel = threading.Event()
    events = []

    def on_event(e):
        events.append(e)
        if e["type"] == "step" and e["step"] == 1:
            cancel.set()

    start = time.monotonic()
    with pytest.raises(HeadshotError) as info:
        sd_scripts.run(setup, "sd1", config, out, on_event, cancel=cancel, env={"FAKE_MODE": mode})
    assert info.value.code == "cancelled"
    assert time.monotonic() - start < 8
    assert cancel.is_set()
    pid = int((out / "pid").read_text())
    assert not _pid_alive(pid)
    assert "# cancelled" in (out / sd_scripts.LOG_NAME).read_text()


def test_run_callback_error_stops_the_process(fake):
    setup, config, out = fake

    def on_event(e):
        if e["type"] == "step" and e["step"] == 1:
            raise RuntimeError("host went away")

    with pytest.raises(RuntimeError, match="host went away"):
        sd_scripts.run(setup, "sd1", config, out, on_event, env={"FAKE_MODE": "hang"})
    assert not _pid_alive(int((out / "pid").read_text()))


def test_run_from_written_config_and_env_isolation(fake, monkeypatch):
    setup, config, out = fake
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    cfg_path = sd_scripts.write_config(config, out / "mine.toml")
    (setup.repo / "train_network.py").write_text(
        "import os\nprint('PP=' + repr(os.environ.get('PYTHONPATH')))\nprint('HS=' + os.environ['HS_FLAG'])\n"
    )
    events = []
    with pytest.raises(HeadshotError) as info:
        sd_scripts.run(setup, "sd1", cfg_path, out, events.append, env={"HS_FLAG": "yes"})
    assert info.value.code == "training_output_missing"
    lines = [e["line"] for e in events if e["type"] == "log"]
    assert "PP=None" in lines and "HS=yes" in lines
    assert not (out / sd_scripts.CONFIG_NAME).exists()  # the given file was used
