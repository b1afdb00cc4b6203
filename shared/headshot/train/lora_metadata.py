"""The safetensors metadata sd-scripts writes for a LoRA (ss_*, modelspec.*), plus our headshot.* keys."""

from __future__ import annotations

import datetime
import json
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from headshot.errors import HeadshotError
from headshot.families import get_family

from .lora_files import _meta_str


def _resolution(resolution: Any) -> tuple[int, int]:
    try:
        if isinstance(resolution, str):
            parts = [int(p) for p in re.split(r"[,x ]+", resolution.strip("()[] ")) if p]
        elif isinstance(resolution, (int, float)):
            parts = [int(resolution)]
        else:
            parts = [int(p) for p in resolution]
    except (TypeError, ValueError):
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise HeadshotError(
            f'resolution {resolution!r} is not a size; pass 512, (768, 1024) or "768,1024" (width, height).',
            "lora_bad_metadata",
        )
    return parts[0], parts[1]


def _dataset_dirs(dataset_dirs: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    out = {}
    for name, info in (dataset_dirs or {}).items():
        if not isinstance(info, Mapping):
            raise HeadshotError(
                f"dataset_dirs[{name!r}] must be a dict with n_repeats and img_count, got {info!r}.",
                "lora_bad_metadata",
            )
        repeats = info.get("n_repeats", info.get("num_repeats"))
        count = info.get("img_count", info.get("image_count"))
        if repeats is None or count is None:
            raise HeadshotError(
                f"dataset_dirs[{name!r}] needs n_repeats and img_count (kohya's ss_dataset_dirs), got {dict(info)}.",
                "lora_bad_metadata",
            )
        out[str(Path(str(name)).name)] = {"n_repeats": int(repeats), "img_count": int(count)}
    return out


def _tag_frequency(tag_frequency: Mapping[str, Any], default_dir: str) -> dict[str, dict[str, int]]:
    if not tag_frequency:
        return {}
    values = list(tag_frequency.values())
    if all(isinstance(v, Mapping) for v in values):
        return {str(Path(str(d)).name): {str(t): int(c) for t, c in tags.items()} for d, tags in tag_frequency.items()}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {default_dir: {str(t): int(c) for t, c in tag_frequency.items()}}
    raise HeadshotError(
        "tag_frequency must be {tag: count} or {folder: {tag: count}}; got a mix of both.", "lora_bad_metadata"
    )


# training-dict keys that have a different ss_* name in sd-scripts
_TRAINING_ALIASES = {
    "lr": "ss_learning_rate",
    "learning_rate": "ss_learning_rate",
    "unet_lr": "ss_unet_lr",
    "text_encoder_lr": "ss_text_encoder_lr",
    "te_lr": "ss_text_encoder_lr",
    "lr_scheduler": "ss_lr_scheduler",
    "scheduler": "ss_lr_scheduler",
    "seed": "ss_seed",
    "max_train_steps": "ss_max_train_steps",
    "batch_size": "ss_batch_size_per_device",
    "train_batch_size": "ss_batch_size_per_device",
    "epochs": "ss_num_epochs",
    "num_epochs": "ss_num_epochs",
    "epoch": "ss_epoch",
    "mixed_precision": "ss_mixed_precision",
    "clip_skip": "ss_clip_skip",
    "sd_model_name": "ss_sd_model_name",
    "base_model": "ss_sd_model_name",
    "sd_model_hash": "ss_new_sd_model_hash",
    "warmup_steps": "ss_lr_warmup_steps",
    "lr_warmup_steps": "ss_lr_warmup_steps",
    "num_train_images": "ss_num_train_images",
    "num_reg_images": "ss_num_reg_images",
    "training_started_at": "ss_training_started_at",
    "training_finished_at": "ss_training_finished_at",
    "session_id": "ss_session_id",
    "network_dropout": "ss_network_dropout",
    "comment": "ss_training_comment",
}
# consumed by kohya_metadata itself, never copied as ss_<key>
_TRAINING_CONSUMED = {"optimizer", "optimizer_args", "steps", "v_parameterization", "repeats", "title"}


def kohya_metadata(
    *,
    family: str,
    rank: int,
    alpha: float,
    output_name: str,
    trigger: str,
    class_word: str,
    tag_frequency: Mapping[str, Any],
    dataset_dirs: Mapping[str, Any],
    training: Mapping[str, Any],
    chosen_step: int | None,
    resolution: Any,
) -> dict[str, str]:
    """The safetensors metadata sd-scripts writes for a LoRA (ss_*, modelspec.*), plus headshot.*.

    ``tag_frequency``: {tag: count} for the one training folder, or {folder: {tag: count}}.
    ``dataset_dirs``: {folder: {"n_repeats": N, "img_count": M}}.
    ``training``: settings such as learning_rate, unet_lr, text_encoder_lr, lr_scheduler, optimizer
    (+ optimizer_args dict), seed, steps / max_train_steps, batch_size, epochs, mixed_precision,
    clip_skip, v_parameterization, sd_model_name, training_started_at; kohya names (learning_rate,
    lr_warmup_steps, ...) become ss_<name>; keys that already hold a dot or start with ss_ are kept
    as they are (e.g. "modelspec.author", "headshot.preset").
    ``chosen_step``: the step of the checkpoint this file holds, if selection picked one.
    Every value is a str; None values are written as "None", as sd-scripts does.
    """
    fam = get_family(family)  # ss_base_model_version, modelspec.* as sd-scripts writes them for it
    training = dict(training or {})
    width, height = _resolution(resolution)
    v_param = bool(training.get("v_parameterization", False))
    trigger_phrase = " ".join(p for p in (str(trigger).strip(), str(class_word).strip()) if p)

    dirs = _dataset_dirs(dataset_dirs)
    repeats = training.get("repeats")
    if repeats is None and len(dirs) == 1:
        repeats = next(iter(dirs.values()))["n_repeats"]
    default_dir = next(iter(dirs)) if len(dirs) == 1 else f"{int(repeats or 1)}_{trigger_phrase}"
    tags = _tag_frequency(tag_frequency, default_dir)

    num_train_images = training.get("num_train_images")
    if num_train_images is None and dirs:
        # kohya counts images times repeats
        num_train_images = sum(d["n_repeats"] * d["img_count"] for d in dirs.values())

    optimizer = training.get("optimizer")
    opt_args = training.get("optimizer_args")
    if optimizer is not None and opt_args:
        if isinstance(opt_args, Mapping):
            opt_args = ",".join(f"{k}={v}" for k, v in opt_args.items())
        elif not isinstance(opt_args, str):
            opt_args = ",".join(str(a) for a in opt_args)
        optimizer = f"{optimizer}({opt_args})"

    steps = chosen_step if chosen_step is not None else training.get("steps", training.get("max_train_steps"))
    now = time.time()
    base_version = fam.base_model_version(v_param)

    meta: dict[str, Any] = {
        "ss_session_id": random.randint(0, 2**32),
        "ss_training_started_at": now,
        "ss_output_name": output_name,
        "ss_learning_rate": None,
        "ss_text_encoder_lr": None,
        "ss_unet_lr": None,
        "ss_num_train_images": num_train_images,
        "ss_num_reg_images": 0,
        "ss_num_epochs": None,
        "ss_batch_size_per_device": None,
        "ss_max_train_steps": training.get("steps"),
        "ss_lr_scheduler": None,
        "ss_network_module": fam.sd_scripts_network_module,
        "ss_network_dim": int(rank),
        "ss_network_alpha": float(alpha),
        "ss_mixed_precision": None,
        "ss_v2": fam.ss_v2,
        "ss_base_model_version": base_version,
        "ss_clip_skip": None,
        "ss_seed": None,
        "ss_optimizer": optimizer,
        "ss_resolution": (width, height),
        "ss_tag_frequency": json.dumps(tags, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(dirs, ensure_ascii=False),
        "ss_reg_dataset_dirs": json.dumps({}),
        "ss_steps": steps,
        "ss_training_finished_at": now,
    }
    for key, value in training.items():
        if key in _TRAINING_CONSUMED:
            continue
        if key.startswith("ss_") or "." in key:
            meta[key] = value
        else:
            meta[_TRAINING_ALIASES.get(key, f"ss_{key}")] = value
    # these are ours to say, whatever the training dict held
    meta["ss_network_module"] = fam.sd_scripts_network_module
    meta["ss_network_dim"] = int(rank)
    meta["ss_network_alpha"] = float(alpha)
    meta["ss_base_model_version"] = base_version
    meta["ss_v2"] = fam.ss_v2
    meta["ss_output_name"] = output_name
    meta["ss_steps"] = steps
    meta["ss_resolution"] = (width, height)

    arch = fam.architecture(v_param)
    started = float(meta["ss_training_started_at"]) if meta["ss_training_started_at"] is not None else now
    meta.update(
        {
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": f"{arch}/lora",
            "modelspec.implementation": fam.modelspec_implementation,
            "modelspec.title": training.get("title") or output_name,
            "modelspec.resolution": f"{width}x{height}",
            "modelspec.date": datetime.datetime.fromtimestamp(int(started)).isoformat(),
            "modelspec.prediction_type": "v" if v_param else "epsilon",
            "modelspec.trigger_phrase": trigger_phrase,
            "modelspec.usage_hint": f"Put '{trigger_phrase}' in the prompt.",
        }
    )
    if training.get("clip_skip") is not None:
        meta["modelspec.encoder_layer"] = str(training["clip_skip"])
    for key, value in training.items():  # explicit modelspec.* settings win
        if key.startswith("modelspec."):
            meta[key] = value

    meta["headshot.trigger"] = str(trigger)
    meta["headshot.class_word"] = str(class_word)
    if chosen_step is not None:
        meta["headshot.chosen_step"] = int(chosen_step)
    return {k: _meta_str(v) for k, v in meta.items()}
