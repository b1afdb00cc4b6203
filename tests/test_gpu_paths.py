"""The engine's mixed-precision and optimizer paths, exercised without a GPU.

bf16 autocast runs on the CPU, so the engine's real autocast path trains a tiny SD1 (random weights,
tests/tiny_models.py: wiring, not quality). fp16 needs a GPU: its refusal on the CPU and the loss
scaling the engine does around it (a real GradScaler on the CPU) are checked here. bitsandbytes is CUDA
only and not installed here; its absence is what the 8-bit AdamW test simulates.
"""

from __future__ import annotations

import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
from test_train import _settings, dataset, sd1_folder  # noqa: F401  (fixtures)

from headshot.devices import autocast_dtype
from headshot.errors import HeadshotError
from headshot.train import lora_files
from headshot.train.engine import LoraTrainer
from headshot.train.launch import create_job
from headshot.train.optimizers import grad_scaler, make_lr_schedule, make_optimizer


def test_bf16_autocast_trains_on_the_cpu(sd1_folder, dataset, tmp_path):  # noqa: F811
    """--mixed-precision bf16 on the CPU: frozen weights in bf16, LoRA layers fp32, every LoRA forward of a
    training step under CPU autocast in bf16, no loss scaler, a finite loss and a saved LoRA."""
    seen = []

    def record(module, args, output):
        if type(module).__module__.startswith("peft.") and torch.is_grad_enabled() and isinstance(output, torch.Tensor):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), output.dtype))

    settings = _settings(dataset, sd1_folder, tmp_path / "out", steps=2, checkpoint_every=2, mixed_precision="bf16")
    trainer = LoraTrainer(settings, create_job(settings))
    assert trainer.autocast == torch.bfloat16
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = trainer.run()
    finally:
        handle.remove()
    assert trainer.scaler is None
    unet = trainer._base.unet
    frozen = {p.dtype for n, p in unet.named_parameters() if "lora_" not in n}
    trained = {p.dtype for n, p in unet.named_parameters() if "lora_" in n}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}
    assert seen and all(on and dtype == torch.bfloat16 and out == torch.bfloat16 for on, dtype, out in seen)
    events, _ = trainer.job.events()
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    tensors, metadata = lora_files.load_lora(result["lora"])
    assert tensors and metadata["ss_mixed_precision"] == "bf16"


def test_fp16_on_the_cpu_is_refused_before_anything_loads(sd1_folder, dataset, tmp_path):  # noqa: F811
    settings = _settings(dataset, tmp_path / "no-such-model.safetensors", tmp_path / "out", mixed_precision="fp16")
    with pytest.raises(HeadshotError, match="fp16 mixed precision needs a GPU; on the CPU use bf16") as caught:
        LoraTrainer(settings, create_job(settings))
    assert caught.value.code == "bad_option"


def test_auto_precision_is_fp32_on_the_cpu_and_explicit_bf16_is_kept():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, "no") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "fp16") == torch.float16
    assert autocast_dtype(torch.device("cuda"), "no") is None


def test_loss_scaler_only_for_fp16():
    assert grad_scaler(torch.device("cpu"), None) is None
    assert grad_scaler(torch.device("cpu"), torch.bfloat16) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": the scaler is made for the device asked for
        scaler = grad_scaler(torch.device("cuda"), torch.float16)
    assert isinstance(scaler, torch.amp.GradScaler) and scaler._device == "cuda"


def _optimizer_step(scaler) -> torch.Tensor:
    """One engine optimizer step (LoraTrainer._optimizer_step, the real method) on a fixed problem whose
    gradient norm (~200) is far above the clip (1.0): clipping only gives the same update if the scaled
    gradients were unscaled first."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 8))
    inputs, target = torch.randn(16, 8) * 10, torch.randn(16, 8)
    optimizer = make_optimizer("adamw", [{"params": [weight], "lr": 0.1}], 0.1)
    schedule = make_lr_schedule("constant", optimizer, 0, 1)
    trainer = SimpleNamespace(scaler=scaler, optimizer=optimizer, trainable=[weight], lr_schedule=schedule)
    loss = ((inputs @ weight - target) ** 2).sum()
    LoraTrainer._optimizer_step(trainer, loss)  # type: ignore[arg-type]
    assert weight.grad is None  # zeroed (set to None) for the next step
    return weight.detach()


def test_scaled_step_unscales_before_clipping_and_matches_the_plain_step():
    plain = _optimizer_step(None)
    scaled = _optimizer_step(torch.amp.GradScaler("cpu", init_scale=2.0**12))
    assert torch.allclose(plain, scaled, atol=1e-6)


def test_adamw8bit_without_bitsandbytes_stops_before_the_model_loads(sd1_folder, dataset, tmp_path, monkeypatch):  # noqa: F811
    """An explicit 8-bit AdamW is never swapped silently: without bitsandbytes the run stops at once (before
    minutes of loading), naming the package and the option to use instead."""
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError, as when missing
    settings = _settings(dataset, sd1_folder, tmp_path / "out", optimizer="adamw8bit")
    with pytest.raises(HeadshotError, match=r"needs bitsandbytes .*--optimizer adamw") as caught:
        LoraTrainer(settings, create_job(settings))
    assert caught.value.code == "missing_optimizer"
