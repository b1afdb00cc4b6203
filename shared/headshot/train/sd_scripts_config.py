"""The TOML sd-scripts reads with `--config_file`, and the state folders it resumes from.

Facts about sd-scripts this module relies on (read in kohya-ss/sd-scripts at 48d368fa, Feb 2026;
tests/sd_scripts_options.json records its option names, tools/record_sd_scripts_options.py makes it):

- `--config_file X.toml` (library/train_util.py `read_config_from_file`) flattens every table of the
  TOML into one `argparse.Namespace` and hands it to `parser.parse_args(namespace=...)`. Values from the
  file therefore skip argparse's `type=` conversion and `choices=` checks, and unknown keys are not
  rejected. So every value here already has the type the script expects (e.g. `resolution` is the
  string "512,512": `prepare_dataset_args` calls `args.resolution.split(",")`), and every key is checked
  against the recorded option list. Options on the command line win over the file.
- The file name must end in `.toml` (otherwise it looks for `X.toml`).
- `--caption_extension` defaults to ".caption"; we always say ".txt".
- `lr_scheduler = "constant"` with `lr_warmup_steps > 0` raises ValueError (`get_scheduler_fix`), so a
  warmup turns "constant" into "constant_with_warmup".
- `save_state` writes `<output_dir>/<output_name>-step%08d-state/` (accelerate's save_state plus
  train_network.py's `train_state.json` with `current_step`) after each step checkpoint, and
  `<output_name>-state/` at the end; `save_last_n_steps_state` removes older ones. `--resume DIR`
  loads one; only with `--skip_until_initial_step` does the step count go on from `current_step`
  (without it the run starts again at step 0 on the restored weights).
- Resuming past the first epoch miscounts in sd-scripts (train_network.py sets `global_step` to the
  steps into the current epoch, then trains max_train_steps minus that: kohya-ss/sd-scripts#1406,
  #1999), so `one_epoch_repeats` makes the whole run one epoch.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

from ..errors import HeadshotError
from ..families import get_family
from ..outputs import parse_toml, write_toml

OPTIMIZERS = {"adamw": "AdamW", "adamw8bit": "AdamW8bit", "prodigy": "Prodigy"}
# Prodigy's README recommends these for diffusion models (prodigyopt 1.x); sd-scripts parses each
# "key=value" with ast.literal_eval (library/train_util.py get_optimizer).
PRODIGY_ARGS = ["decouple=True", "weight_decay=0.01", "use_bias_correction=True", "safeguard_warmup=True"]
MIXED_PRECISION = {"no": "no", "fp32": "no", "float32": "no", "none": "no", "fp16": "fp16", "bf16": "bf16"}


def training_config(
    *,
    family: str,
    base_model: Path,
    dataset_toml: Path,
    out_dir: Path,
    output_name: str,
    steps: int,
    rank: int,
    alpha: float,
    lr: float,
    text_encoder_lr: float | None,
    optimizer: str,
    scheduler: str,
    warmup_steps: int,
    seed: int,
    mixed_precision: str,
    gradient_checkpointing: bool,
    cache_latents: bool,
    min_snr_gamma: float | None,
    noise_offset: float | None,
    save_every_n_steps: int | None,
    resolution: int,
    tokenizer_cache_dir: Path | None,
    extra: dict | None = None,
    device: str | None = None,
    attention: str = "sdpa",
    save_state: bool = True,
) -> dict:
    """The content of the TOML for `--config_file`, flat (sd-scripts merges all tables anyway).

    `device` ("cpu", "cuda", None = unknown) only guards against settings that cannot work on a
    CPU: fp16 mixed precision (refused) and xformers (replaced by sdpa, which PyTorch also runs on
    the CPU). `attention` is "sdpa" (default), "xformers" or "none". `extra` is merged last; a value
    of None removes a key. Keys in `extra` are passed through unchecked (newer sd-scripts may know
    more); the caller answers for them. `save_state` keeps sd-scripts' training state (optimizer,
    scheduler, RNG, step) beside each step checkpoint, the last two only, so `--resume` can go on.
    """
    fam = get_family(family)  # its script, network module and options (names and aliases accepted)
    if steps < 1:
        raise HeadshotError(f"steps must be at least 1, got {steps}", code="bad_option")
    if rank < 1:
        raise HeadshotError(f"rank must be at least 1, got {rank}", code="bad_option")
    opt = OPTIMIZERS.get(str(optimizer).strip().lower())
    if opt is None:
        raise HeadshotError(
            f"optimizer {optimizer!r} is not supported with sd-scripts here: use one of "
            + ", ".join(OPTIMIZERS.values()),
            code="bad_option",
        )
    precision = MIXED_PRECISION.get(str(mixed_precision).strip().lower())
    if precision is None:
        raise HeadshotError(
            f"mixed precision {mixed_precision!r} is not one of fp32 (no), fp16, bf16", code="bad_option"
        )
    on_cpu = device is not None and str(device).lower().startswith("cpu")
    if on_cpu and precision == "fp16":
        raise HeadshotError("fp16 mixed precision needs a GPU; on the CPU use bf16 or fp32", code="bad_option")
    attention = str(attention).lower()
    if attention not in ("sdpa", "xformers", "none"):
        raise HeadshotError(f"attention {attention!r} is not one of sdpa, xformers, none", code="bad_option")
    if on_cpu and attention == "xformers":
        attention = "sdpa"
    warmup_steps = int(warmup_steps or 0)
    lr_scheduler = str(scheduler).strip()
    if lr_scheduler == "constant" and warmup_steps > 0:
        lr_scheduler = "constant_with_warmup"  # "constant" refuses a warmup (train_util.get_scheduler_fix)

    # T: library/train_util.py, N: train_network.py, C: library/config_util.py,
    # F: library/custom_train_functions.py, U: library/utils.py (add_logging_arguments)
    cfg: dict = {
        "pretrained_model_name_or_path": _model_ref(base_model),  # T add_sd_models_arguments
        "dataset_config": _absolute(dataset_toml),  # C add_config_arguments
        "output_dir": _absolute(out_dir),  # T add_training_arguments
        "output_name": str(output_name),  # T add_training_arguments
        "save_model_as": "safetensors",  # N setup_parser
        "network_module": fam.sd_scripts_network_module,  # N setup_parser
        "network_dim": int(rank),  # N
        "network_alpha": float(alpha),  # N
        "learning_rate": float(lr),  # T add_optimizer_arguments
        "unet_lr": float(lr),  # N
        "optimizer_type": opt,  # T add_optimizer_arguments
        "lr_scheduler": lr_scheduler,  # T add_optimizer_arguments
        "lr_warmup_steps": warmup_steps,  # T add_optimizer_arguments (int: steps)
        "max_train_steps": int(steps),  # T add_training_arguments
        "seed": int(seed),  # T add_training_arguments
        "mixed_precision": precision,  # T add_training_arguments, choices no/fp16/bf16
        "gradient_checkpointing": bool(gradient_checkpointing),  # T add_training_arguments
        "cache_latents": bool(cache_latents),  # T add_dataset_arguments
        "caption_extension": ".txt",  # T add_dataset_arguments; its default is ".caption"
        "resolution": f"{int(resolution)},{int(resolution)}",  # T add_dataset_arguments; a str, split(",")
        "sdpa": attention == "sdpa",  # T add_training_arguments
        "xformers": attention == "xformers",  # T add_training_arguments
        "max_data_loader_n_workers": 0,  # T add_training_arguments
        "persistent_data_loader_workers": False,  # T add_training_arguments
        "console_log_simple": True,  # U: plain log lines on stdout instead of rich's wrapped columns
        "training_comment": f"Headshot Studio identity LoRA ({fam.name}) trained with sd-scripts",  # N
    }
    if text_encoder_lr is None:
        cfg["network_train_unet_only"] = True  # N
    else:
        cfg["text_encoder_lr"] = float(text_encoder_lr)  # N (nargs="*"; a float is accepted, see train_network.py)
    if opt == "Prodigy":
        cfg["optimizer_args"] = list(PRODIGY_ARGS)  # T add_optimizer_arguments (list of "k=v")
    if min_snr_gamma is not None:
        cfg["min_snr_gamma"] = float(min_snr_gamma)  # F add_custom_train_arguments
    if noise_offset is not None:
        cfg["noise_offset"] = float(noise_offset)  # T add_training_arguments
    if save_every_n_steps is not None:
        cfg["save_every_n_steps"] = int(save_every_n_steps)  # T add_training_arguments
        if save_state:
            cfg["save_state"] = True  # T add_training_arguments
            # keeps the newest two states: one to resume from even if a kill cut the newest short
            cfg["save_last_n_steps_state"] = int(save_every_n_steps)  # T add_training_arguments
    if tokenizer_cache_dir is not None:
        cfg["tokenizer_cache_dir"] = _absolute(tokenizer_cache_dir)  # T add_sd_models_arguments
    cfg.update(fam.sd_scripts_options)  # SD2: v2 (T add_sd_models_arguments); SDXL: no_half_vae (N setup_parser)
    for key, value in (extra or {}).items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = str(value) if isinstance(value, Path) else value
    return cfg


def _absolute(path) -> str:
    # sd-scripts runs with cwd = its checkout, so a relative path would point into it
    return str(Path(path).expanduser().absolute())


def _model_ref(model) -> str:
    """A local file or folder as an absolute path; anything else (a hub id) as given."""
    local = Path(model).expanduser()
    return str(local.absolute()) if isinstance(model, Path) or local.exists() else str(model)


def write_config(config: dict, path: Path) -> Path:
    """Write `config` as TOML (None values left out); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".toml":
        # sd-scripts appends ".toml" to a config_file name that does not end in it
        raise HeadshotError(f"an sd-scripts config file must end in .toml: {path}", code="bad_option")
    return write_toml(
        path,
        config,
        comment=f"Written by Headshot Studio for kohya sd-scripts: train_network.py --config_file {path.name}",
    )


def _read_config(config) -> tuple[dict, Path | None]:
    if isinstance(config, Mapping):
        return dict(config), None
    path = Path(config)
    try:
        return parse_toml(path.read_text(encoding="utf-8")), path
    except (OSError, ValueError) as exc:
        raise HeadshotError(f"cannot read sd-scripts config {path}: {exc}", code="unreadable") from exc


# --- resuming ------------------------------------------------------------------------------------

_STEP_STATE = re.compile(r"^(?P<name>.+)-step(?P<step>\d{8})-state$")  # train_util.STEP_STATE_NAME


def _whole_state(folder: Path) -> bool:
    # accelerate writes random_states_<process>.pkl last; train_state.json comes from train_network.py
    return (
        folder.is_dir()
        and not folder.is_symlink()
        and (folder / "train_state.json").is_file()
        and any(folder.glob("random_states_*.pkl"))
    )


def latest_state(output_dir: Path, output_name: str, before_step: int) -> tuple[int, Path] | None:
    """(step, folder) of the newest whole step state sd-scripts saved below `before_step`, or None.

    Only folders named as sd-scripts names them for `output_name` count; the step comes from the
    name (nothing in the folder is read here: sd-scripts loads it itself with --resume).
    """
    found = []
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    for folder in output_dir.iterdir():
        match = _STEP_STATE.match(folder.name)
        if match and match["name"] == output_name and 0 < int(match["step"]) < before_step and _whole_state(folder):
            found.append((int(match["step"]), folder))
    return max(found) if found else None


def finished_state(output_dir: Path, output_name: str) -> bool:
    """sd-scripts saved its end-of-training state (train_util.LAST_STATE_NAME): the run had finished."""
    return _whole_state(Path(output_dir) / f"{output_name}-state")


def one_epoch_repeats(image_count: int, repeats: int, steps: int, batch_size: int = 1) -> int:
    """num_repeats that puts all `steps` into sd-scripts' first epoch (see the module note on resuming).

    With no regularisation images an epoch is every image `num_repeats` times in a shuffled order, so
    more repeats and fewer epochs show each image as often over the run.
    """
    if image_count < 1:
        raise HeadshotError("the dataset holds no images", code="no_dataset")
    return max(int(repeats), math.ceil(int(steps) * int(batch_size) / int(image_count)))
