"""Parsing the output of the optional kohya sd-scripts backend into events.

Real tqdm output made as train_network.py makes it, recorded progress and checkpoint lines (steps, other
bars such as latent caching and validation, "saving checkpoint: …", epochs), lines that are not progress,
and tracebacks and errors, which become one error event naming the exception.
"""

from __future__ import annotations

import io
import textwrap

import pytest

from headshot.train import sd_scripts


def test_parse_progress_real_tqdm_output():
    tqdm = pytest.importorskip("tqdm")
    buf = io.StringIO()
    bar = tqdm.tqdm(range(10), smoothing=0, desc="steps", file=buf)  # as train_network.py makes it
    for i in range(3):
        bar.update(1)
        bar.set_postfix(avr_loss=0.5 - i * 0.1)
    bar.close()
    chunks = [c for c in buf.getvalue().replace("\n", "\r").split("\r") if c]
    events = [sd_scripts.parse_progress(c) for c in chunks]
    assert all(e is not None and e["type"] == "step" for e in events)
    assert events[0]["step"] == 0 and events[0]["loss"] is None and events[0]["eta_s"] is None
    assert events[-1]["step"] == 3 and events[-1]["total"] == 10
    assert events[-1]["loss"] == pytest.approx(0.3)
    assert events[-1]["it_per_s"] > 0


def test_parse_progress_lines():
    line = "\rsteps:  30%|███       | 3/10 [00:21<00:49,  7.10s/it, avr_loss=0.123]  "
    e = sd_scripts.parse_progress(line)
    assert e == {
        "type": "step",
        "step": 3,
        "total": 10,
        "loss": 0.123,
        "it_per_s": pytest.approx(1 / 7.1),
        "s_per_it": 7.1,
        "eta_s": 49.0,
        "elapsed_s": 21.0,
    }
    e = sd_scripts.parse_progress("steps: 100%|##########| 1000/1000 [1:02:03<00:00,  2.50it/s, avr_loss=0.0871]")
    assert e["step"] == 1000 and e["elapsed_s"] == 3723 and e["eta_s"] == 0 and e["it_per_s"] == 2.5
    # several redraws in one chunk: the last counts
    e = sd_scripts.parse_progress(
        "steps:  10%|#  | 1/10 [00:01<00:09, 1.0s/it]\rsteps:  20%|## | 2/10 [00:02<00:08, 1.0s/it]"
    )
    assert e["step"] == 2
    # other bars (latent caching, validation) are progress, not training steps
    e = sd_scripts.parse_progress("100%|██████████| 12/12 [00:03<00:00,  3.20it/s]")
    assert e["type"] == "progress" and e["label"] == "" and e["n"] == 12
    e = sd_scripts.parse_progress(
        "validation steps:  50%|#####     | 2/4 [00:01<00:01,  1.9it/s, val_epoch_avg_loss=0.1]"
    )
    assert e["type"] == "progress" and e["label"] == "validation steps"

    e = sd_scripts.parse_progress("saving checkpoint: /tmp/out/jane_lora-step00000200.safetensors")
    assert e == {"type": "checkpoint", "path": "/tmp/out/jane_lora-step00000200.safetensors", "step": 200}
    e = sd_scripts.parse_progress(
        "2026-02-16 10:00:00 INFO     saving checkpoint: /o/jane.safetensors    train_util.py:5889"
    )
    assert e == {"type": "checkpoint", "path": "/o/jane.safetensors"}
    assert sd_scripts.parse_progress("epoch 2/5") == {"type": "epoch", "epoch": 2, "total": 5}

    assert sd_scripts.parse_progress("") is None
    assert sd_scripts.parse_progress("\r") is None
    assert sd_scripts.parse_progress("Loading settings from cfg.toml...") is None
    assert sd_scripts.parse_progress("/x/y.py:3: FutureWarning: something old") is None
    assert sd_scripts.parse_progress("DeprecationWarning: old") is None


def test_parse_progress_traceback():
    traceback = textwrap.dedent("""\
        Traceback (most recent call last):
          File "/sd-scripts/train_network.py", line 1790, in <module>
            trainer.train(args)
          File "/sd-scripts/library/train_util.py", line 5410, in prepare_dataset_args
            args.resolution = tuple([int(r) for r in args.resolution.split(",")])
        AttributeError: 'int' object has no attribute 'split'
        """)
    events = [sd_scripts.parse_progress(line) for line in traceback.splitlines()]
    errors = [e for e in events if e]
    assert errors == [{"type": "error", "message": "AttributeError: 'int' object has no attribute 'split'"}]
    e = sd_scripts.parse_progress("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB")
    assert e["type"] == "error" and "CUDA out of memory" in e["message"]
    assert sd_scripts.parse_progress("KeyboardInterrupt")["type"] == "error"
    assert sd_scripts.parse_progress("ERROR    file not found: x.toml")["message"] == "file not found: x.toml"
