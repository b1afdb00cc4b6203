"""A whole sd-scripts job against the stand-in checkout of test_sd_scripts (FAKE_TRAINER), which follows
sd-scripts' own step, epoch and resume arithmetic: resuming, what lands in --out, and its content.

The base model is a diffusers folder with only the two JSON files the family check reads: the
stand-in trainer never loads weights. The training photos are the astronaut (dlib finds her face).
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from sd_scripts_standin import FAKE_TRAINER, _fake_checkout
from test_sd_scripts import fake  # noqa: F401  (a fixture)

from headshot.errors import HeadshotError
from headshot.samples import astronaut_shots
from headshot.train import sd_scripts, sd_scripts_job
from headshot.train.launch import create_job
from headshot.train.loss_curve import draw_loss_curve
from headshot.train.sd_scripts_job import run_sd_scripts_job
from headshot.train.settings import TrainSettings

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


@pytest.fixture
def setup(tmp_path):
    data = tmp_path / "data"
    subset = data / "img" / "1_ohwx woman"  # one repeat: three steps an epoch as prepared
    subset.mkdir(parents=True)
    for i, name in enumerate(["astronaut.png", "astronaut_closeup.jpg", "astronaut_mirrored.jpg"]):
        astronaut_shots()[name].convert("RGB").resize((512, 512)).save(subset / f"{i:02d}.png")
        (subset / f"{i:02d}.txt").write_text("ohwx woman, smile")
    (data / "report.json").write_text(json.dumps({"trigger": "ohwx", "class": "woman", "photos": []}))
    base = tmp_path / "base"
    (base / "text_encoder").mkdir(parents=True)
    (base / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "text_encoder": ["transformers", "CLIPTextModel"]})
    )
    (base / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": 768, "hidden_act": "quick_gelu"}))
    repo = _fake_checkout(tmp_path, FAKE_TRAINER)
    settings = TrainSettings(
        dataset_dir=str(data),
        base_model=str(base),
        out_dir=str(tmp_path / "out"),
        backend="sd-scripts",
        sd_scripts_repo=str(repo),
        sd_scripts_python=sys.executable,
        steps=8,
        checkpoint_every=2,
        rank=4,
        resolution=64,
        face_backend="dlib",
        device="cpu",
        warmup_steps=0,
        scheduler="constant",
    )
    return settings, tmp_path / "out"


def _steps_after_resume(out: Path) -> tuple[int, list[int]]:
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    i = max(i for i, e in enumerate(events) if e["type"] == "resumed")
    return events[i]["step"], [e["step"] for e in events[i:] if e["type"] == "step"]


def test_resume_goes_on_from_the_saved_state(setup, monkeypatch):
    settings, out = setup
    monkeypatch.setenv("FAKE_MODE", "fail")
    monkeypatch.setenv("FAKE_FAIL_AT", "5")  # states were saved at steps 2 and 4
    job = create_job(settings)
    with pytest.raises(HeadshotError, match="boom at step 5"):
        run_sd_scripts_job(settings, job)
    job.update(state="failed")
    work = out / "sd-scripts"
    # all steps in one sd-scripts epoch: past the first epoch its resume miscounts (sd-scripts#1406)
    subset = tomllib.loads((work / "dataset.toml").read_text())["datasets"][0]["subsets"][0]
    assert subset["num_repeats"] == 3
    assert tomllib.loads((work / "sd-scripts.toml").read_text())["save_state"] is True

    monkeypatch.setenv("FAKE_MODE", "ok")
    job = create_job(settings, resume=True)
    result = run_sd_scripts_job(settings, job)
    command = (work / "sd-scripts.log").read_text().splitlines()[0]
    assert f"--resume {work / 'headshot_lora-step00000004-state'} --skip_until_initial_step" in command
    assert _steps_after_resume(out) == (4, [5, 6, 7, 8])  # on from the state, not from step 0
    rows = [line.split(",")[0] for line in (out / "loss.csv").read_text().splitlines()[1:]]
    assert rows == [str(i) for i in range(1, 9)]  # step 5 of the failed run is replaced, not repeated
    assert job.read()["steps_done"] == 8 and result["chosen_step"] == 8
    assert (work / "headshot_lora-step00000006.safetensors").is_file()  # checkpoints named by the true step
    assert (out / "headshot_lora.safetensors").read_bytes() == b"fake lora"


def test_outputs_have_the_expected_content(setup, monkeypatch):
    settings, out = setup
    monkeypatch.setenv("FAKE_MODE", "ok")
    result = run_sd_scripts_job(settings, create_job(settings))
    sidecar = json.loads((out / "headshot_lora.json").read_text(encoding="utf-8"))
    assert sidecar["activation text"] == "ohwx woman"
    assert sidecar["preferred weight"] == 0.8 and sidecar["sd version"] == "SD1"
    identity = json.loads((out / "headshot_lora.identity.json").read_text())
    assert result["identity"] == str(out / "headshot_lora.identity.json")
    assert identity["backend"] == "dlib" and identity["images"] == 3 and len(identity["embedding"]) == 128
    with Image.open(out / "loss.png") as png:
        assert png.format == "PNG" and png.size == (640, 320)
        colours = {c for _, c in png.convert("RGB").getcolors(640 * 320)}
    assert (30, 90, 200) in colours and len(colours) > 3  # the smoothed curve is drawn, not a blank image
    assert not list(out.glob(".*.tmp*")) and not list((out / "sd-scripts").glob(".*.tmp*"))


def test_loss_png_draws_the_curve_where_the_loss_is(tmp_path):
    csv = tmp_path / "loss.csv"
    csv.write_text("step,loss,lr\n" + "".join(f"{i},{1.0 / i:.4f},0.001\n" for i in range(1, 41)))
    draw_loss_curve(csv, tmp_path / "loss.png")
    with Image.open(tmp_path / "loss.png") as png:
        rgb = png.convert("RGB")
    curve = [(x, y) for x in range(rgb.width) for y in range(rgb.height) if rgb.getpixel((x, y)) == (30, 90, 200)]
    left = [y for x, y in curve if x < 120]
    right = [y for x, y in curve if x > 520]
    assert left and right and min(left) < min(right) - 100  # a falling loss: high on the left, low on the right


def test_a_file_we_did_not_write_is_never_overwritten(setup, monkeypatch):
    settings, out = setup
    monkeypatch.setenv("FAKE_MODE", "ok")
    job = create_job(settings)
    mine = out / "headshot_lora.identity.json"
    mine.write_text("my own notes\n")
    with pytest.raises(HeadshotError) as info:
        run_sd_scripts_job(settings, job)
    assert info.value.code == "would_overwrite" and "headshot_lora.identity.json" in str(info.value)
    assert mine.read_text() == "my own notes\n"
    assert not (out / "sd-scripts" / "sd-scripts.log").exists()  # refused before training


def test_a_failed_copy_leaves_no_half_written_lora(setup, monkeypatch):
    settings, out = setup
    monkeypatch.setenv("FAKE_MODE", "ok")

    def disk_full(src, dst):
        Path(dst).write_bytes(b"fake")  # part of the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sd_scripts_job.shutil, "copyfile", disk_full)
    with pytest.raises(HeadshotError) as info:
        run_sd_scripts_job(settings, create_job(settings))
    assert info.value.code == "disk_full"
    assert not (out / "headshot_lora.safetensors").exists()
    assert not list(out.glob(".*.tmp*"))


# --- the pieces of resuming ------------------------------------------------------------------


def test_latest_state_picks_the_newest_whole_state_of_this_run(tmp_path):
    def state(name, whole=True):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "train_state.json").write_text("{}")
        if whole:  # accelerate writes random_states_0.pkl last
            (folder / "random_states_0.pkl").write_bytes(b"")
        return folder

    assert sd_scripts.latest_state(tmp_path, "jane", 10) is None
    state("jane-step00000002-state")
    four = state("jane-step00000004-state")
    state("jane-step00000006-state", whole=False)  # a kill cut it short
    state("other-step00000008-state")  # another output name
    state("jane-step00000010-state")  # not below the step asked for (the run's last)
    (tmp_path / "jane-step00000009-state").symlink_to(four)  # a link is not a state sd-scripts saved
    assert sd_scripts.latest_state(tmp_path, "jane", 10) == (4, four)
    assert not sd_scripts.finished_state(tmp_path, "jane")
    state("jane-state")
    assert sd_scripts.finished_state(tmp_path, "jane")


def test_one_epoch_repeats_puts_every_step_in_the_first_epoch():
    assert sd_scripts.one_epoch_repeats(3, 1, 8) == 3  # 3 images x 3 repeats = 9 steps >= 8
    assert sd_scripts.one_epoch_repeats(12, 10, 800) == 67
    assert sd_scripts.one_epoch_repeats(12, 10, 100) == 10  # never fewer than asked for
    with pytest.raises(HeadshotError):
        sd_scripts.one_epoch_repeats(0, 1, 8)


def test_resume_command_line_and_resumed_bar_count_on(fake, tmp_path):
    setup, config, out = fake
    state = out / "jane_lora-step00000002-state"
    state.mkdir(parents=True)
    (state / "train_state.json").write_text('{"current_epoch": 1, "current_step": 2}')
    cmd = sd_scripts.command(setup, "sd1", tmp_path / "c.toml", resume=state)
    assert cmd[-3:] == ["--resume", str(state), "--skip_until_initial_step"]
    events = []
    sd_scripts.run(setup, "sd1", config, out, events.append, env={"FAKE_MODE": "ok"}, resume=state)
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [2, 3, 4, 5] and {e["total"] for e in steps} == {5}
    assert "--resume " + str(state) in (out / sd_scripts.LOG_NAME).read_text().splitlines()[0]


def test_no_half_vae_reaches_sd_scripts(setup, monkeypatch):
    settings, out = setup
    monkeypatch.setenv("FAKE_MODE", "ok")
    run_sd_scripts_job(settings, create_job(settings))
    assert "no_half_vae" not in tomllib.loads((out / "sd-scripts" / "sd-scripts.toml").read_text())
    settings.no_half_vae, settings.out_dir = True, str(out.parent / "fp32")
    run_sd_scripts_job(settings, create_job(settings))
    assert tomllib.loads((out.parent / "fp32" / "sd-scripts" / "sd-scripts.toml").read_text())["no_half_vae"] is True


def test_a_vae_file_reaches_sd_scripts_as_its_vae_option(setup, monkeypatch, tmp_path):
    settings, out = setup
    monkeypatch.setenv("FAKE_MODE", "ok")
    (tmp_path / "vae.safetensors").write_bytes(b"x")  # sd-scripts reads it; the job only passes it on
    settings.vae = str(tmp_path / "vae.safetensors")
    run_sd_scripts_job(settings, create_job(settings))
    config = tomllib.loads((out / "sd-scripts" / "sd-scripts.toml").read_text())
    assert config["vae"] == str((tmp_path / "vae.safetensors").resolve())


def test_a_repeated_job_on_the_same_photos_finds_no_face_again(setup, monkeypatch):
    from headshot.faces.dlib_backend import DlibFaceAnalyzer

    settings, out = setup
    monkeypatch.setenv("FAKE_MODE", "ok")
    settings.cache_dir = str(out.parent / "shared-cache")  # as a sweep shares one
    first = json.loads(Path(run_sd_scripts_job(settings, create_job(settings))["identity"]).read_text())
    detected = []
    real_detect = DlibFaceAnalyzer.detect
    monkeypatch.setattr(DlibFaceAnalyzer, "detect", lambda self, rgb: detected.append(1) or real_detect(self, rgb))
    settings.out_dir = str(out.parent / "again")
    again = json.loads(Path(run_sd_scripts_job(settings, create_job(settings))["identity"]).read_text())
    assert detected == [] and again["embedding"] == first["embedding"] and again["images"] == 3
