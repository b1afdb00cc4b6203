"""Training state on disk as data only: tensors in safetensors, everything else in JSON.

A checkpoint folder (checkpoints/step-NNNNNN/) holds
  lora.safetensors   the LoRA as it stands (kohya format, usable as is)
  state.safetensors  trainable weights (fp32), optimizer tensors, RNG byte states
  state.json         step, optimizer structure (param_groups, non-tensor state), LR schedule,
                     grad scaler, python/numpy RNG; written last, so its presence marks the folder whole

Nothing here unpickles: a job folder is data (it may come from anyone, e.g. a shared workflow), and
`torch.load(weights_only=False)` on it would run whatever code the file names. A `state.pt` written by
an older version is never read.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Callable, cast

from ..errors import HeadshotError
from ..outputs import atomic_save, atomic_write_json

TENSORS_NAME = "state.safetensors"
STATE_NAME = "state.json"
LEGACY_NAME = "state.pt"
FORMAT = 1

if TYPE_CHECKING:  # torch and numpy load with the engine, not with job.py's file names
    import torch


def _json_safe(value, where: str):
    """`value` as plain JSON types; anything else (a class, a function) is refused, not pickled."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise HeadshotError(f"cannot save the training state: {where} holds {exc}", "state_not_serialisable") from None


def _split_optimizer(state_dict: dict, tensors: dict) -> dict:
    """Optimizer tensors go to `tensors` under optimizer.state.<param>.<name>; the rest is returned as JSON."""
    import torch

    state = {}
    for index, entries in state_dict["state"].items():
        plain, names = {}, []
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.state.{index}.{name}"] = value.detach().cpu().contiguous().clone()
                names.append(name)
            else:
                plain[name] = value
        state[str(index)] = {"tensors": names, "values": plain}
    return _json_safe({"state": state, "param_groups": state_dict["param_groups"]}, "the optimizer state")


def _join_optimizer(data: dict, tensors: dict, live_groups: list[dict]) -> dict:
    state = {}
    for index, entry in data["state"].items():
        values = dict(entry["values"])
        for name in entry["tensors"]:
            values[name] = tensors[f"optimizer.state.{index}.{name}"]
        state[int(index)] = values
    groups = []
    for saved, live in zip(data["param_groups"], live_groups):
        # JSON has no tuples; give back the type the optimizer uses (AdamW's betas)
        groups.append(
            {k: tuple(v) if isinstance(live.get(k), tuple) and isinstance(v, list) else v for k, v in saved.items()}
        )
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    folder: Path,
    write_lora: Callable[[Path], None],
    *,
    step: int,
    trainable: list[torch.Tensor],
    optimizer,
    lr_schedule,
    scaler,
    generator: torch.Generator,
) -> None:
    """Write checkpoint `step` into `folder`: the LoRA (`write_lora(path)`), the state tensors, state.json last."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_NAME).unlink(missing_ok=True)  # rewriting a step: incomplete until the new JSON lands
    write_lora(folder / "lora.safetensors")
    tensors = {f"lora.{i}": p.detach().cpu().float().contiguous().clone() for i, p in enumerate(trainable)}
    optimizer_json = _split_optimizer(optimizer.state_dict(), tensors)
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    for i, s in enumerate(cuda):
        tensors[f"rng.cuda.{i}"] = s
    # the legacy tuple (get_state's default); numpy's stub picks the dict overload for a bare call
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    version, py_state, gauss = random.getstate()
    record = {
        "format": FORMAT,
        "step": step,
        "lora_count": len(trainable),
        "cuda_rng_count": len(cuda),
        "optimizer": optimizer_json,
        "lr_schedule": _json_safe(lr_schedule.state_dict(), "the learning-rate schedule"),
        "scaler": _json_safe(scaler.state_dict(), "the gradient scaler") if scaler else None,
        "python_random": [version, list(py_state), gauss],
        "numpy_random": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    atomic_save(folder / TENSORS_NAME, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(folder / STATE_NAME, record)


def is_complete(folder: Path) -> bool:
    return (folder / STATE_NAME).is_file() and (folder / TENSORS_NAME).is_file()


def is_legacy(folder: Path) -> bool:
    return (folder / LEGACY_NAME).is_file() and not is_complete(folder)


def load_state(
    folder: Path,
    step: int,
    *,
    trainable: list[torch.Tensor],
    optimizer,
    lr_schedule,
    scaler,
    generator: torch.Generator,
) -> None:
    """Restore what `save_state` wrote into live objects; a mismatch is a HeadshotError, nothing half-applied
    to the weights."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    def mismatch(why: str) -> HeadshotError:
        return HeadshotError(
            f"checkpoint {folder} cannot be resumed: {why}; start a new job in another --out folder",
            "checkpoint_mismatch",
        )

    try:
        record = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / TENSORS_NAME))
    except (OSError, ValueError) as exc:
        raise mismatch(f"its state files are unreadable ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("step") != step:
        raise mismatch("state.json is not a training state of this step")
    if record.get("lora_count") != len(trainable):
        raise mismatch("it was made with other settings (rank or targets)")
    saved = [s for i in range(len(trainable)) if (s := tensors.get(f"lora.{i}")) is not None]
    if len(saved) != len(trainable) or any(s.shape != p.shape for s, p in zip(saved, trainable)):
        raise mismatch("its LoRA weights have other shapes (rank or targets)")
    try:
        optimizer.load_state_dict(_join_optimizer(record["optimizer"], tensors, optimizer.param_groups))
        lr_schedule.load_state_dict(record["lr_schedule"])
        if scaler and record.get("scaler"):
            scaler.load_state_dict(record["scaler"])
        name, pos, has_gauss, cached = record["numpy_random"]
        numpy_state = (name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached)
        version, py_state, gauss = record["python_random"]
        python_state = (version, tuple(int(v) for v in py_state), gauss)
        cuda = [tensors[f"rng.cuda.{i}"] for i in range(record.get("cuda_rng_count", 0))]
        generator_state, torch_state = tensors["rng.generator"], tensors["rng.torch"]
    except (KeyError, TypeError, ValueError) as exc:
        raise mismatch(f"its state does not fit this run ({type(exc).__name__}: {exc})") from None
    with torch.no_grad():
        for param, value in zip(trainable, saved):
            param.copy_(value.to(param.device))
    generator.set_state(generator_state)
    torch.set_rng_state(torch_state)
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
