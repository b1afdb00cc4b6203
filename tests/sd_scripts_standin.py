"""A stand-in sd-scripts checkout: its train_network.py prints what the real one prints (a tqdm bar with \\r
redraws, "saving checkpoint: ...", a traceback), writes step checkpoints and, with save_state, state
folders, and follows train_network.py's step, epoch and resume arithmetic (kohya-ss/sd-scripts 48d368fa:
initial_step, epoch_to_start, skip_until_initial_step). FAKE_MODE: ok, fail (at FAKE_FAIL_AT), nofile, hang,
stubborn (ignores SIGTERM)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def _fake_checkout(tmp_path: Path, body: str) -> Path:
    repo = tmp_path / "sd-scripts"
    repo.mkdir()
    (repo / "train_network.py").write_text(textwrap.dedent(body), encoding="utf-8")
    (repo / "sdxl_train_network.py").write_text(textwrap.dedent(body), encoding="utf-8")
    return repo


FAKE_TRAINER = r"""
import json, math, os, signal, sys, time
try:
    import tomllib
except ImportError:
    import tomli as tomllib
argv = sys.argv
cfg_path = argv[argv.index("--config_file") + 1]
with open(cfg_path, "rb") as fh:
    cfg = tomllib.load(fh)
out, name, total = cfg["output_dir"], cfg["output_name"], cfg["max_train_steps"]
every = cfg.get("save_every_n_steps")
mode = os.environ.get("FAKE_MODE", "ok")
fail_at = int(os.environ.get("FAKE_FAIL_AT", "2"))
with open(os.path.join(out, "pid"), "w") as fh:
    fh.write(str(os.getpid()))
print("Loading settings from " + cfg_path + "...")
print("cwd " + os.getcwd())
# an epoch is every image num_repeats times (batch size 1), as sd-scripts counts it
per_epoch = total
if os.path.exists(cfg.get("dataset_config", "")):
    with open(cfg["dataset_config"], "rb") as fh:
        sub = tomllib.load(fh)["datasets"][0]["subsets"][0]
    per_epoch = max(1, len([f for f in os.listdir(sub["image_dir"]) if f.endswith(".png")]) * sub["num_repeats"])
epochs = math.ceil(total / per_epoch)
# train_network.py's resume arithmetic at 48d368fa (initial_step, epoch_to_start, global_step)
initial = 0
if "--resume" in argv:
    state = argv[argv.index("--resume") + 1]
    with open(os.path.join(state, "train_state.json")) as fh:
        initial = json.load(fh)["current_step"]
    print("resume training from local state: " + state)
epoch_to_start = 0
if initial > 0:
    epoch_to_start = initial // per_epoch
    if "--skip_until_initial_step" not in argv:
        initial = 0  # only the epoch number is skipped: the step count starts again at 0
global_step = 0
if initial > 0:
    initial -= epoch_to_start * per_epoch
    global_step = initial
bar_total = total - initial
print("\nepoch %d/%d\n" % (epoch_to_start + 1, epochs))
err = sys.stderr
err.write("\rsteps:   0%%|          | 0/%d [00:00<?, ?it/s]" % bar_total)
err.flush()
if mode in ("hang", "stubborn"):
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(0.3)
    err.write("\rsteps:  %d%%|#         | 1/%d [00:01<00:09,  1.00s/it, avr_loss=0.5]" % (100 // total, total))
    err.flush()
    time.sleep(60)
n = 0
for epoch in range(epoch_to_start, epochs):
    for batch in range(per_epoch):
        if initial > 0:
            initial -= 1  # skip_until_initial_step: batches already trained
            continue
        time.sleep(0.02)
        n += 1
        global_step += 1
        bar = (100 * n // bar_total, n, bar_total, n % 10, 1.0 / global_step)
        err.write("\rsteps: %3d%%|#         | %d/%d [00:0%d<00:00,  2.00it/s, avr_loss=%.3f]" % bar)
        err.flush()
        if mode == "fail" and global_step == fail_at:
            err.write("\n")
            raise ValueError("boom at step %d" % global_step)
        if every and global_step % every == 0:
            path = os.path.join(out, "%s-step%08d.safetensors" % (name, global_step))
            print("\nsaving checkpoint: " + path, flush=True)
            open(path, "wb").write(b"x")
            if cfg.get("save_state"):
                state = os.path.join(out, "%s-step%08d-state" % (name, global_step))
                os.makedirs(state, exist_ok=True)
                with open(os.path.join(state, "train_state.json"), "w") as fh:
                    json.dump({"current_epoch": epoch + 1, "current_step": global_step}, fh)
                open(os.path.join(state, "random_states_0.pkl"), "wb").close()
        if global_step >= total:
            break
    if global_step >= total:
        break
err.write("\n")
if cfg.get("save_state"):
    os.makedirs(os.path.join(out, name + "-state"), exist_ok=True)
path = os.path.join(out, name + ".safetensors")
print("\nsaving checkpoint: " + path, flush=True)
if mode != "nofile":
    open(path, "wb").write(b"fake lora")
print("model saved.")
"""
