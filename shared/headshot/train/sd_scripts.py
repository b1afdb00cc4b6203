"""The optional sd-scripts backend: train the identity LoRA with a person's own kohya sd-scripts checkout.

We never import sd-scripts. We write a config TOML for its `--config_file` option (sd_scripts_config),
start its `train_network.py` (SD1/SD2) or `sdxl_train_network.py` (SDXL) with the checkout's own
Python, and turn its console output into events (sd_scripts_output).

Run directly (`python train_network.py`, no `accelerate launch`), the script builds its own
`Accelerator`: one process on the first GPU, or the CPU when there is none. That works on both
without an `accelerate config` file, which `accelerate launch` would otherwise want.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import BackendUnavailable, HeadshotError
from ..families import get_family
from .sd_scripts_config import (  # noqa: F401  (re-exported: the backend's one public module)
    MIXED_PRECISION,
    OPTIMIZERS,
    PRODIGY_ARGS,
    _read_config,
    finished_state,
    latest_state,
    one_epoch_repeats,
    training_config,
    write_config,
)
from .sd_scripts_output import _read_lines, parse_progress

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
        return self.repo / get_family(family).sd_scripts_script


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


def command(setup: SdScriptsSetup, family: str, config_path: Path, resume: Path | None = None) -> list[str]:
    """The command line that trains with `config_path`; run it with cwd = setup.repo.

    The script is started directly with the venv's Python rather than through `accelerate launch`:
    it creates its own Accelerator, so one process uses the first GPU or else the CPU, with no
    `accelerate config` needed. `resume`, a state folder sd-scripts saved (`latest_state`), is
    loaded with `--resume` and `--skip_until_initial_step`, so the step count goes on from it.
    """
    script = setup.script(family)
    if not script.is_file():
        raise BackendUnavailable(f"{script.name} is missing from {setup.repo}: update your sd-scripts checkout")
    config_path = Path(config_path)
    if config_path.suffix.lower() != ".toml":
        raise HeadshotError(f"an sd-scripts config file must end in .toml: {config_path}", code="bad_option")
    cmd = [str(setup.python), str(script), "--config_file", str(config_path.absolute())]
    if resume is not None:
        cmd += ["--resume", str(Path(resume).absolute()), "--skip_until_initial_step"]
    return cmd


# --- running it -----------------------------------------------------------------------------------


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


def run(
    setup: SdScriptsSetup,
    family: str,
    config,
    out_dir: Path,
    on_event: Callable[[dict], None],
    cancel: threading.Event | None = None,
    env: Mapping[str, str | None] | None = None,
    resume: Path | None = None,
) -> Path:
    """Train with sd-scripts and return the final LoRA file.

    `config` is a dict from `training_config` (written to out_dir/sd-scripts.toml) or the path of a
    TOML already written. The script runs with cwd = the checkout; stdout and stderr are read
    together. For every line `on_event` gets {"type": "log", "line"} and then the parsed event, if
    any (see parse_progress); it is called on the caller's thread. out_dir/sd-scripts.log keeps the
    whole output. Setting `cancel` stops the process (SIGTERM, then SIGKILL after
    TERMINATE_GRACE_S) and raises HeadshotError code "cancelled". A non-zero exit raises
    HeadshotError code "training_failed" quoting the end of the log. `env` adds to (None: removes
    from) the environment, which never inherits our PYTHONPATH or VIRTUAL_ENV. `resume`: a state
    folder to go on from (see `command`); step events then count on from its step, as checkpoints do.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values, config_path = _read_config(config)
    if config_path is None:
        config_path = write_config(values, out_dir / CONFIG_NAME)
    output_name = values.get("output_name")
    if not output_name:
        raise HeadshotError("the sd-scripts config has no output_name", code="bad_option")
    save_as = values.get("save_model_as", "safetensors")
    target = Path(values.get("output_dir") or out_dir).expanduser()
    if not target.is_absolute():
        target = setup.repo / target  # sd-scripts resolves it from its own cwd
    final = target / f"{output_name}.{save_as}"
    cmd = command(setup, family, config_path, resume)
    max_steps = values.get("max_train_steps")

    log_path = out_dir / LOG_NAME
    tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
    errors: list[str] = []
    lines: queue.Queue = queue.Queue()
    popen_extra: dict[str, Any]
    if sys.platform == "win32":  # os.name == "nt", spelt so mypy skips the branch for the other platform
        popen_extra = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    else:
        popen_extra = {"start_new_session": True}
    with log_path.open("w", encoding="utf-8", errors="replace") as log:
        log.write("$ " + subprocess.list2cmdline(cmd) + f"\n# cwd: {setup.repo}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=str(setup.repo),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=_child_env(env),
                **popen_extra,
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
                    elif event["type"] == "step" and isinstance(max_steps, int) and event["total"] < max_steps:
                        # a resumed run's bar counts only the steps still to do
                        event["step"] += max_steps - event["total"]
                        event["total"] = max_steps
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
    "SdScriptsSetup",
    "locate",
    "training_config",
    "write_config",
    "command",
    "parse_progress",
    "run",
    "latest_state",
    "finished_state",
    "one_epoch_repeats",
]
