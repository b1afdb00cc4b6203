"""The optional sd-scripts backend: train the identity LoRA with a person's own kohya sd-scripts checkout.

We never import sd-scripts. We write a config TOML for its `--config_file` option, start its
`train_network.py` (SD1/SD2) or `sdxl_train_network.py` (SDXL) with the checkout's own Python, and
turn its console output into events.

Facts about sd-scripts this module relies on (read in kohya-ss/sd-scripts at 48d368fa, Feb 2026):

- `--config_file X.toml` (library/train_util.py `read_config_from_file`) flattens every table of the
  TOML into one `argparse.Namespace` and hands it to `parser.parse_args(namespace=...)`. Values from the
  file therefore skip argparse's `type=` conversion and `choices=` checks, and unknown keys are not
  rejected. So every value here already has the type the script expects (e.g. `resolution` is the
  string "512,512": `prepare_dataset_args` calls `args.resolution.split(",")`), and every key is checked
  by hand against the script's `add_argument` calls (the comments below name the file of each).
- The file name must end in `.toml` (otherwise it looks for `X.toml`).
- `--caption_extension` defaults to ".caption"; we always say ".txt".
- `lr_scheduler = "constant"` with `lr_warmup_steps > 0` raises ValueError (`get_scheduler_fix`), so a
  warmup turns "constant" into "constant_with_warmup".
- Progress: a tqdm bar with desc "steps" and postfix `avr_loss=`; checkpoints are announced with
  `accelerator.print(f"\\nsaving checkpoint: {path}")`; step checkpoints are named
  `<output_name>-step00000005.safetensors`, the last one `<output_name>.safetensors`.
- Run directly (`python train_network.py`, no `accelerate launch`), the script builds its own
  `Accelerator`: one process on the first GPU, or the CPU when there is none. That works on both
  without an `accelerate config` file, which `accelerate launch` would otherwise want.
"""
from __future__ import annotations

import codecs
import json
import math
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..errors import BackendUnavailable, HeadshotError

#: the scripts that train a LoRA, by model family
SCRIPTS = {"sd1": "train_network.py", "sd2": "train_network.py", "sdxl": "sdxl_train_network.py"}
_FAMILY_ALIASES = {
    "sd1": "sd1", "sd15": "sd1", "sd1.5": "sd1", "sd1x": "sd1", "sd1.x": "sd1", "sd_1": "sd1",
    "sd2": "sd2", "sd21": "sd2", "sd2.1": "sd2", "sd2x": "sd2", "sd2.x": "sd2",
    "sdxl": "sdxl", "sd_xl": "sdxl", "xl": "sdxl",
}
OPTIMIZERS = {"adamw": "AdamW", "adamw8bit": "AdamW8bit", "prodigy": "Prodigy"}
# Prodigy's README recommends these for diffusion models (prodigyopt 1.x); sd-scripts parses each
# "key=value" with ast.literal_eval (library/train_util.py get_optimizer).
PRODIGY_ARGS = ["decouple=True", "weight_decay=0.01", "use_bias_correction=True", "safeguard_warmup=True"]
MIXED_PRECISION = {"no": "no", "fp32": "no", "float32": "no", "none": "no", "fp16": "fp16", "bf16": "bf16"}

LOG_NAME = "sd-scripts.log"
CONFIG_NAME = "sd-scripts.toml"
#: seconds between SIGTERM and SIGKILL when a run is cancelled
TERMINATE_GRACE_S = 5.0
#: lines of the log quoted in the error when sd-scripts fails
ERROR_TAIL_LINES = 40
# environment variables of our own process that must not leak into the checkout's Python
_ENV_DROP = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX", "__PYVENV_LAUNCHER__")


@dataclass
class SdScriptsSetup:
    repo: Path  # the sd-scripts checkout (has train_network.py, sdxl_train_network.py)
    python: Path  # the Python of its venv

    def script(self, family: str) -> Path:
        return self.repo / SCRIPTS[normalize_family(family)]


def normalize_family(family: str) -> str:
    key = str(family).strip().lower().replace("-", "").replace(" ", "")
    if key not in _FAMILY_ALIASES:
        raise HeadshotError(
            f"unknown model family {family!r} for sd-scripts: use sd1, sd2 or sdxl", code="unknown_family"
        )
    return _FAMILY_ALIASES[key]


# --- finding the checkout ------------------------------------------------------------------------

def _venv_pythons(repo: Path) -> list[Path]:
    names = ("venv", ".venv", "env")
    if os.name == "nt":
        return [repo / n / "Scripts" / "python.exe" for n in names]
    return [repo / n / "bin" / p for n in names for p in ("python", "python3")]


def locate(repo, python=None) -> SdScriptsSetup:
    """Check an sd-scripts checkout and the Python that runs it.

    `python` defaults to the checkout's own venv (`venv/`, `.venv/` or `env/`, as kohya's install
    instructions make it). Raises BackendUnavailable with what to fix.
    """
    if repo is None or str(repo).strip() == "":
        raise BackendUnavailable("no sd-scripts checkout given: pass the folder of your kohya-ss/sd-scripts clone")
    repo = Path(repo).expanduser()
    if not repo.exists():
        raise BackendUnavailable(f"sd-scripts folder not found: {repo}")
    if not repo.is_dir():
        raise BackendUnavailable(f"sd-scripts path is not a folder: {repo}")
    repo = repo.resolve()
    if not (repo / "train_network.py").is_file():
        raise BackendUnavailable(
            f"{repo} is not a kohya sd-scripts checkout: train_network.py is missing "
            "(clone https://github.com/kohya-ss/sd-scripts and point to its top folder)"
        )

    if python is None or str(python).strip() == "":
        found = next((p for p in _venv_pythons(repo) if p.is_file()), None)
        if found is None:
            raise BackendUnavailable(
                f"no Python venv found in {repo} (looked for venv/, .venv/, env/): create one and install "
                "sd-scripts' requirements.txt into it, or pass the Python that has them"
            )
        python = found
    # no resolve(): a venv's python is a symlink, and resolving it would leave the venv
    python = Path(python).expanduser().absolute()
    if not python.exists():
        raise BackendUnavailable(f"Python for sd-scripts not found: {python}")
    if python.is_dir():
        raise BackendUnavailable(f"Python for sd-scripts is a folder, not a program: {python}")
    if os.name != "nt" and not os.access(python, os.X_OK):
        raise BackendUnavailable(f"Python for sd-scripts is not executable: {python}")
    return SdScriptsSetup(repo=repo, python=python)


# --- the config file -----------------------------------------------------------------------------

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
) -> dict:
    """The content of the TOML for `--config_file`, flat (sd-scripts merges all tables anyway).

    `device` ("cpu", "cuda", None = unknown) only guards against settings that cannot work on a
    CPU: fp16 mixed precision (refused) and xformers (replaced by sdpa, which PyTorch also runs on
    the CPU). `attention` is "sdpa" (default), "xformers" or "none". `extra` is merged last; a value
    of None removes a key. Keys in `extra` are passed through unchecked (newer sd-scripts may know
    more); the caller answers for them.
    """
    fam = normalize_family(family)
    if steps < 1:
        raise HeadshotError(f"steps must be at least 1, got {steps}", code="bad_training_config")
    if rank < 1:
        raise HeadshotError(f"rank must be at least 1, got {rank}", code="bad_training_config")
    opt = OPTIMIZERS.get(str(optimizer).strip().lower())
    if opt is None:
        raise HeadshotError(
            f"optimizer {optimizer!r} is not supported with sd-scripts here: use one of "
            + ", ".join(OPTIMIZERS.values()),
            code="bad_training_config",
        )
    precision = MIXED_PRECISION.get(str(mixed_precision).strip().lower())
    if precision is None:
        raise HeadshotError(
            f"mixed precision {mixed_precision!r} is not one of fp32 (no), fp16, bf16", code="bad_training_config"
        )
    on_cpu = device is not None and str(device).lower().startswith("cpu")
    if on_cpu and precision == "fp16":
        raise HeadshotError(
            "fp16 mixed precision needs a GPU; on the CPU use bf16 or fp32", code="bad_training_config"
        )
    attention = str(attention).lower()
    if attention not in ("sdpa", "xformers", "none"):
        raise HeadshotError(f"attention {attention!r} is not one of sdpa, xformers, none", code="bad_training_config")
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
        "network_module": "networks.lora",  # N setup_parser
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
        "training_comment": f"Headshot Studio identity LoRA ({fam}) trained with sd-scripts",  # N
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
    if tokenizer_cache_dir is not None:
        cfg["tokenizer_cache_dir"] = _absolute(tokenizer_cache_dir)  # T add_sd_models_arguments
    if fam == "sd2":
        cfg["v2"] = True  # T add_sd_models_arguments (v-prediction models also need v_parameterization)
    if fam == "sdxl":
        # SDXL's original VAE overflows in fp16; with cached latents it only runs once anyway
        cfg["no_half_vae"] = True  # N setup_parser
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


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(value: str) -> str:
    # JSON escapes are valid TOML basic-string escapes; TOML also wants DEL escaped
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (str, Path)):
        return _toml_string(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise HeadshotError(f"cannot write {type(value).__name__} value to a TOML config: {value!r}", code="bad_training_config")


def write_config(config: dict, path: Path) -> Path:
    """Write `config` as TOML (top-level keys, then one table per nested dict); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".toml":
        # sd-scripts appends ".toml" to a config_file name that does not end in it
        raise HeadshotError(f"an sd-scripts config file must end in .toml: {path}", code="bad_training_config")
    lines = ["# Written by Headshot Studio for kohya sd-scripts: train_network.py --config_file " + path.name]
    tables = []
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for name, table in tables:
        lines += ["", f"[{_toml_key(name)}]"]
        for key, value in table.items():
            if isinstance(value, Mapping):
                raise HeadshotError(f"config table {name!r} nests too deep at {key!r}", code="bad_training_config")
            if value is not None:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def command(setup: SdScriptsSetup, family: str, config_path: Path) -> list[str]:
    """The command line that trains with `config_path`; run it with cwd = setup.repo.

    The script is started directly with the venv's Python rather than through `accelerate launch`:
    it creates its own Accelerator, so one process uses the first GPU or else the CPU, with no
    `accelerate config` needed (sd-scripts on the CPU here: see HOSTS.md).
    """
    script = setup.script(family)
    if not script.is_file():
        raise BackendUnavailable(
            f"{script.name} is missing from {setup.repo}: update your sd-scripts checkout"
        )
    config_path = Path(config_path)
    if config_path.suffix.lower() != ".toml":
        raise HeadshotError(f"an sd-scripts config file must end in .toml: {config_path}", code="bad_training_config")
    return [str(setup.python), str(script), "--config_file", str(config_path.absolute())]


# --- reading its output --------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# tqdm's default bar: "steps:  30%|###       | 3/10 [00:05<00:12,  1.73s/it, avr_loss=0.123]"
_TQDM = re.compile(
    r"^(?:(?P<desc>.*?):\s*)?(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*"
    r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:]+|\?),\s*(?P<rate>\?|[\d.]+(?:e[+-]?\d+)?)\s*(?P<unit>s/it|it/s)"
    r"(?:,\s*(?P<postfix>.*?))?\]\s*$"
)
_CHECKPOINT = re.compile(r"saving checkpoint:\s*(?P<path>.+?)\s*$")
_STEP_NAME = re.compile(r"-step(\d+)\.[A-Za-z]+$")
_RICH_SUFFIX = re.compile(r"\s{2,}[\w.\-]+\.py:\d+\s*$")  # rich's "   train_util.py:1234" column
_EPOCH = re.compile(r"^epoch (?P<epoch>\d+)/(?P<total>\d+)\s*$")
_EXCEPTION = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*(?P<name>\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(?P<msg>.*))?\s*$"
)
_LOG_ERROR = re.compile(r"^(?:\[?[\d\-/: ]+\]?\s+)?(?:ERROR|CRITICAL)\s+(?P<msg>\S.*)$")


def _seconds(clock: str) -> float | None:
    if not clock or clock == "?":
        return None
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text.strip()


def _postfix(text: str | None) -> dict:
    values = {}
    for item in (text or "").split(","):
        if "=" in item:
            key, value = item.split("=", 1)
            values[key.strip()] = _number(value.strip())
    return values


def parse_progress(line: str) -> dict | None:
    """One line of sd-scripts output (already split on \\r and \\n) as an event, or None.

    {"type": "step", "step", "total", "loss", "it_per_s", "s_per_it", "eta_s", "elapsed_s"} for the
    training bar; {"type": "progress", "label", "n", "total", ...} for other bars (latent caching,
    validation); {"type": "checkpoint", "path", "step"?}; {"type": "epoch", "epoch", "total"};
    {"type": "error", "message"} for an exception line ("ValueError: …", the end of a traceback) or a
    line logged at ERROR. tqdm redraws a step when its postfix changes, so a step may come twice.
    """
    if not line:
        return None
    text = _ANSI.sub("", line).rstrip()
    if not text.strip():
        return None
    # a chunk may still hold several \r-separated redraws: the last complete one counts
    if "\r" in text or "\n" in text:
        for part in reversed(re.split(r"[\r\n]+", text)):
            event = parse_progress(part)
            if event is not None:
                return event
        return None

    bar = _TQDM.match(text.strip())
    if bar:
        n, total = int(bar["n"]), int(bar["total"])
        rate = None if bar["rate"] == "?" else float(bar["rate"])
        if rate is None or rate == 0:
            it_per_s = s_per_it = None
        elif bar["unit"] == "it/s":
            it_per_s, s_per_it = rate, 1.0 / rate
        else:
            it_per_s, s_per_it = 1.0 / rate, rate
        post = _postfix(bar["postfix"])
        loss = post.get("avr_loss", post.get("loss"))
        desc = (bar["desc"] or "").strip()
        common = {
            "total": total,
            "it_per_s": it_per_s,
            "s_per_it": s_per_it,
            "eta_s": _seconds(bar["remaining"]),
            "elapsed_s": _seconds(bar["elapsed"]),
        }
        if desc == "steps":
            return {"type": "step", "step": n, **common, "loss": loss if isinstance(loss, float) else None}
        return {"type": "progress", "label": desc, "n": n, **common, **({"postfix": post} if post else {})}

    checkpoint = _CHECKPOINT.search(text)
    if checkpoint:
        path = _RICH_SUFFIX.sub("", checkpoint["path"]).strip()
        event = {"type": "checkpoint", "path": path}
        step = _STEP_NAME.search(path)
        if step:
            event["step"] = int(step.group(1))
        return event

    epoch = _EPOCH.match(text.strip())
    if epoch:
        return {"type": "epoch", "epoch": int(epoch["epoch"]), "total": int(epoch["total"])}

    exception = _EXCEPTION.match(text)
    if exception and not exception["name"].endswith("Warning"):
        return {"type": "error", "message": text.strip()}
    logged = _LOG_ERROR.match(text.strip())
    if logged:
        return {"type": "error", "message": _RICH_SUFFIX.sub("", logged["msg"]).strip()}
    return None


class _LineSplitter:
    """Bytes in, lines out: splits on \\r and \\n (tqdm redraws with \\r) and decodes UTF-8 safely."""

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(data)
        parts = re.split(r"\r\n|\r|\n", text)
        self._pending = parts.pop()
        # tqdm writes "\r" + bar in one write and the next redraw only comes with the next step:
        # a complete bar at the end of a chunk is a line now, not when the next step starts
        if self._pending and _TQDM.match(self._pending.strip()):
            parts.append(self._pending)
            self._pending = ""
        return [p for p in parts if p.strip()]

    def close(self) -> list[str]:
        text = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [text] if text.strip() else []


def _read_lines(stream, out: queue.Queue) -> None:
    splitter = _LineSplitter()
    read = getattr(stream, "read1", None) or stream.read
    try:
        while True:
            try:
                data = read(65536)
            except (OSError, ValueError):
                break
            if not data:
                break
            for line in splitter.feed(data):
                out.put(line)
        for line in splitter.close():
            out.put(line)
    finally:
        out.put(None)


def _child_env(env: Mapping[str, str | None] | None) -> dict:
    child = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    child.update({"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"})
    for key, value in (env or {}).items():
        if value is None:
            child.pop(key, None)
        else:
            child[key] = str(value)
    return child


def _stop(proc: subprocess.Popen, grace: float) -> None:
    """Terminate the process (and its group on POSIX), then kill it if it outlives `grace` seconds."""
    for hard in (False, True):
        if proc.poll() is not None:
            return
        try:
            if os.name == "nt":
                proc.kill() if hard else proc.terminate()
            else:
                os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
        except (ProcessLookupError, PermissionError, OSError):
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass


def _read_config(config) -> tuple[dict, Path | None]:
    if isinstance(config, Mapping):
        return dict(config), None
    path = Path(config)
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh), path
    except (OSError, ValueError) as exc:
        raise HeadshotError(f"cannot read sd-scripts config {path}: {exc}", code="bad_training_config") from exc


def run(
    setup: SdScriptsSetup,
    family: str,
    config,
    out_dir: Path,
    on_event: Callable[[dict], None],
    cancel: threading.Event | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Path:
    """Train with sd-scripts and return the final LoRA file.

    `config` is a dict from `training_config` (written to out_dir/sd-scripts.toml) or the path of a
    TOML already written. The script runs with cwd = the checkout; stdout and stderr are read
    together. For every line `on_event` gets {"type": "log", "line"} and then the parsed event, if
    any (see parse_progress); it is called on the caller's thread. out_dir/sd-scripts.log keeps the
    whole output. Setting `cancel` stops the process (SIGTERM, then SIGKILL after
    TERMINATE_GRACE_S) and raises HeadshotError code "cancelled". A non-zero exit raises
    HeadshotError code "training_failed" quoting the end of the log. `env` adds to (None: removes
    from) the environment, which never inherits our PYTHONPATH or VIRTUAL_ENV.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values, config_path = _read_config(config)
    if config_path is None:
        config_path = write_config(values, out_dir / CONFIG_NAME)
    output_name = values.get("output_name")
    if not output_name:
        raise HeadshotError("the sd-scripts config has no output_name", code="bad_training_config")
    save_as = values.get("save_model_as", "safetensors")
    target = Path(values.get("output_dir") or out_dir).expanduser()
    if not target.is_absolute():
        target = setup.repo / target  # sd-scripts resolves it from its own cwd
    final = target / f"{output_name}.{save_as}"
    cmd = command(setup, family, config_path)

    log_path = out_dir / LOG_NAME
    tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
    errors: list[str] = []
    lines: queue.Queue = queue.Queue()
    popen_extra = (
        {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
    )
    with log_path.open("w", encoding="utf-8", errors="replace") as log:
        log.write("$ " + subprocess.list2cmdline(cmd) + f"\n# cwd: {setup.repo}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                cmd, cwd=str(setup.repo), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=_child_env(env), **popen_extra,
            )
        except OSError as exc:
            raise BackendUnavailable(f"cannot start sd-scripts with {setup.python}: {exc}") from exc
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), name="sd-scripts-output", daemon=True)
        reader.start()
        cancelled = False
        exited_at = None
        try:
            while True:
                if cancel is not None and cancel.is_set() and not cancelled:
                    cancelled = True
                    log.write("# cancelled: stopping sd-scripts\n")
                    _stop(proc, TERMINATE_GRACE_S)
                try:
                    line = lines.get(timeout=0.1)
                except queue.Empty:
                    # a grandchild may hold the pipe open after the script itself has exited
                    if proc.poll() is not None:
                        exited_at = exited_at or time.monotonic()
                        if time.monotonic() - exited_at > 5.0:
                            break
                    continue
                if line is None:
                    break
                log.write(line.rstrip() + "\n")
                log.flush()
                tail.append(line.rstrip())
                on_event({"type": "log", "line": line})
                event = parse_progress(line)
                if event is not None:
                    if event["type"] == "error":
                        errors.append(event["message"])
                    elif event["type"] == "checkpoint":
                        saved = Path(event["path"])
                        event["final"] = (saved if saved.is_absolute() else setup.repo / saved) == final
                    on_event(event)
            proc.wait()
        except BaseException:
            _stop(proc, TERMINATE_GRACE_S)
            raise
        finally:
            if proc.stdout is not None:
                try:
                    proc.stdout.close()
                except OSError:
                    pass
        code = proc.returncode
        log.write(f"# exit code {code}\n")

    if cancelled:
        raise HeadshotError("training with sd-scripts was cancelled", code="cancelled")
    if code != 0:
        what = errors[-1] if errors else f"exit code {code}"
        raise HeadshotError(
            f"sd-scripts training failed ({what}; exit code {code}). Last lines of {log_path}:\n" + "\n".join(tail),
            code="training_failed",
        )
    if not final.is_file():
        raise HeadshotError(
            f"sd-scripts finished but did not write {final}; see {log_path}", code="training_output_missing"
        )
    return final


__all__ = [
    "SdScriptsSetup", "locate", "training_config", "write_config", "command", "parse_progress", "run",
    "normalize_family", "SCRIPTS",
]
