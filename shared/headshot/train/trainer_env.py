"""Which Python runs the training worker: the host's own when it can train, else an overlay venv built once.

A WebUI pins its packages (AUTOMATIC1111 1.10: transformers 4.30.2, no diffusers, no peft) and upgrading
them breaks it. So the worker (job.start_worker(job, python=...)) may run in an *overlay*: a venv made
from the host's interpreter whose own site-packages holds only the training stack, with a .pth that
appends the host's site-packages after it. torch and everything else come from the host (pip gets the
host's exact torch, torchvision and numpy as constraints); the overlay's copies shadow the host's older
ones for the worker only, and nothing is written into the host's folders.

TRAINER_NEEDS was measured (python 3.11, torch 2.14.1, CPU) by training 2 steps with `headshot train`
on tiny SD1 single-file, SD1 diffusers-folder and SDXL single-file models (and SD1 with no tokenizer
cache, the open_clip BPE path) in overlays holding older releases:
- Forge's own set (transformers 4.46.1, diffusers 0.31.0, peft 0.13.2, hub 0.26.2, accelerate 0.31.0):
  all pass, so Forge trains in its own Python, no overlay.
- transformers 4.31.0, diffusers 0.28.2, peft 0.12.0, hub 0.25.2: all pass (the floor). diffusers 0.27.2
  lacks single_file_utils.convert_ldm_clip_checkpoint; peft 0.11.1 passed SD1 too (0.12 kept: fully tested).
- transformers 4.30.2 (A1111 1.10): SD1 passes; SDXL single-file fails, as 4.30 keeps CLIPTextModel's
  position_ids as a weight that SDXL checkpoints do not hold (4.31 made it a buffer).
- peft 0.21 imports transformers' Cache classes (absent from 4.30); diffusers 0.28 imports
  huggingface_hub.cached_download (gone in hub 0.26): pip does not know either, the build's import check does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..errors import HeadshotError
from ..outputs import atomic_write_json

#: distribution -> oldest release the trainer works with (see the module docstring for the evidence)
TRAINER_NEEDS: dict[str, str] = {"diffusers": "0.28", "peft": "0.12", "transformers": "4.31", "safetensors": "0.4"}
#: asked for too when building: the newest peft imports accelerate.utils.memory.clear_device_cache (accelerate
#: 0.33) but declares accelerate>=0.21, so an overlay over A1111's accelerate 0.21 would not import
BUILD_COMPANIONS: dict[str, str] = {"accelerate": "0.33"}
#: the host's own copies of these are never replaced, not even inside the overlay
HOST_OWNED = ("torch", "torchvision", "torchaudio", "xformers", "numpy")
RECORD_NAME = "headshot-trainer-env.json"
PTH_NAME = "zz-headshot-host-site-packages.pth"  # sorted last: the overlay's own packages come first
#: rough download sizes (MB) for the first progress line; a guess, never used for decisions
_DOWNLOAD_MB = {"diffusers": 4, "transformers": 11, "tokenizers": 3, "peft": 1, "accelerate": 1}
#: run once in a finished build: versions alone miss a pair that cannot import together (hub vs transformers)
STACK_CHECK = (
    "import diffusers, peft, transformers, safetensors.torch; from peft import LoraConfig, inject_adapter_in_model; "
    "from diffusers import UNet2DConditionModel, AutoencoderKL; from transformers import CLIPTextModel, CLIPTokenizer"
)
# run in the probed interpreter: versions from metadata only (no torch import, so it takes ~0.1 s)
_PROBE = r"""
import json, site, sys
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
sites = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
if site.ENABLE_USER_SITE:
    sites.append(site.getusersitepackages())
print(json.dumps({"python": sys.version.split()[0], "prefix": sys.prefix, "sites": sites,
                  "versions": {name: version(name) for name in json.loads(sys.argv[1])}}))
"""


def probe(python: str) -> dict:
    """Python version, site-packages folders and the versions of what training needs, as `python` sees them."""
    names = [*TRAINER_NEEDS, *HOST_OWNED]
    try:
        run = subprocess.run(
            [python, "-c", _PROBE, json.dumps(names)], capture_output=True, text=True, timeout=120, env=_clean_env()
        )
        if run.returncode != 0:
            raise OSError(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}")
        return json.loads(run.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        raise HeadshotError(
            f"cannot ask the Python at {python} what it has installed ({exc}); check that it runs", "trainer_env_failed"
        ) from None


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def _missing(versions: dict) -> list[str]:
    return [
        f"{name}>={oldest}"
        for name, oldest in TRAINER_NEEDS.items()
        if not versions.get(name) or _release(versions[name]) < _release(oldest)
    ]


def missing_for_training(python: str) -> list[str]:
    """Requirements (`name>=version`) that `python` lacks or has too old to train; [] when it can train."""
    return _missing(probe(python)["versions"])


def _describe(versions: dict) -> str:
    return ", ".join(
        f"{name} {versions[name]} (needs {oldest} or newer)" if versions.get(name) else f"{name} (not installed)"
        for name, oldest in TRAINER_NEEDS.items()
        if not versions.get(name) or _release(versions[name]) < _release(oldest)
    )


def _overlay_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _host_pins(host: dict) -> dict:
    return {name: host["versions"].get(name) for name in HOST_OWNED if host["versions"].get(name)}


def _clean_env() -> dict:
    """The environment minus what would send pip's installs (or imports) somewhere else."""
    drop = ("PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_REQUIRE_VIRTUALENV", "PYTHONHOME", "VIRTUAL_ENV")
    return {key: value for key, value in os.environ.items() if key not in drop}


def _usable(env_dir: Path, host: dict, python: str) -> bool:
    """The overlay was built for this host Python and its torch, and still holds what it installed.
    No second interpreter is started (a reuse stays under a second): files and the record decide."""
    try:
        record = json.loads((env_dir / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or not _overlay_python(env_dir).exists():
        return False
    if record.get("host_python") != python or record.get("host_pins") != _host_pins(host):
        return False  # another host, or the host's torch changed (an update): rebuild against it
    if record.get("needs") != TRAINER_NEEDS:
        return False  # a newer Headshot Studio needs newer releases
    site = record.get("site_packages", "")
    return (
        all(
            _has_dist(Path(site), name, version) if version != host["versions"].get(name) else True
            for name, version in (record.get("installed") or {}).items()
        )
        and Path(site, PTH_NAME).is_file()
    )


def _has_dist(site: Path, name: str, version: str) -> bool:
    pattern = re.sub(r"[-_.]+", "[-_.]", name)
    return any(
        re.fullmatch(f"(?i){pattern}-{re.escape(version)}\\.dist-info", entry.name)
        for entry in site.glob("*.dist-info")
    )


def trainer_python(env_dir: Path, progress: Callable[[str], None] = print, python: str = sys.executable) -> str:
    """The Python to run the training worker with: `python` itself when it can train, else the overlay at
    `env_dir`, built on first use (minutes, pip's output goes to `progress`) and reused after (< 1 s)."""
    python = os.path.abspath(python)  # not resolved: a venv's python is a link to the base interpreter
    host = probe(python)
    if not _missing(host["versions"]):
        return python
    env_dir = Path(env_dir).absolute()
    if _usable(env_dir, host, python):
        return str(_overlay_python(env_dir))
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(env_dir, progress):
        if not _usable(env_dir, host, python):  # another tab may have built it while we waited
            _build(env_dir, host, python, progress)
    return str(_overlay_python(env_dir))


class _build_lock:
    """One build per env_dir across processes (two WebUI tabs); the OS frees it if the builder dies."""

    def __init__(self, env_dir: Path, progress: Callable[[str], None]):
        from filelock import FileLock

        self.lock = FileLock(str(env_dir.parent / f".{env_dir.name}.lock"))
        self.progress = progress

    def __enter__(self):
        from filelock import Timeout

        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            self.progress("another process is building the training environment; waiting for it to finish")
            self.lock.acquire(timeout=3600)
        return self

    def __exit__(self, *exc):
        self.lock.release()


def _build(env_dir: Path, host: dict, python: str, progress: Callable[[str], None]) -> None:
    if env_dir.exists() and not (env_dir / RECORD_NAME).is_file() and any(env_dir.iterdir()):
        raise HeadshotError(
            f"{env_dir} exists but is not a training environment made by Headshot Studio; "
            "move it away (or empty it), then train again",
            "would_overwrite",
        )
    for stale in env_dir.parent.glob(f".{env_dir.name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a build that was killed: never used, we hold the lock
    # all at once, so pip picks one set that fits together
    wanted = [f"{name}>={oldest}" for name, oldest in {**TRAINER_NEEDS, **BUILD_COMPANIONS}.items()]
    size = sum(_DOWNLOAD_MB.get(spec.split(">=")[0], 1) for spec in _missing(host["versions"]))
    progress(
        f"training needs newer packages than this Python has: {_describe(host['versions'])}. Building a training "
        f"environment in {env_dir} once, on top of {host['prefix']} (torch and the rest come from there, nothing "
        f"of it changes): about {size + 5} MB to download and 100-200 MB on disk, a few minutes"
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{env_dir.name}.building-", dir=env_dir.parent))
    try:
        staged_python, staged_site = _make_overlay(staging, host, python, progress)
        constraints = staging / "host-constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in _host_pins(host).items()))
        pip = [staged_python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--prefer-binary"]
        _run([*pip, "-c", str(constraints), *wanted], progress, python, env_dir)
        overlay = probe(staged_python)
        if _missing(overlay["versions"]) or _host_pins(overlay) != _host_pins(host):
            raise _build_error(python, env_dir, f"after pip, it still has {overlay['versions']}")
        check = subprocess.run([staged_python, "-c", STACK_CHECK], capture_output=True, text=True, env=_clean_env())
        if check.returncode != 0:
            raise _build_error(python, env_dir, "importing the training stack failed: " + _tail(check.stderr))
        atomic_write_json(
            staging / RECORD_NAME,
            {
                "host_python": python,
                "python_version": host["python"],
                "host_pins": _host_pins(host),
                "needs": TRAINER_NEEDS,
                "site_packages": str(env_dir / Path(staged_site).relative_to(staging)),
                "installed": {name: overlay["versions"].get(name) for name in TRAINER_NEEDS},
                "host_had": {name: host["versions"].get(name) for name in TRAINER_NEEDS},
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        _swap_in(staging, env_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"training environment ready: {env_dir}")


def _make_overlay(folder: Path, host: dict, python: str, progress: Callable[[str], None]) -> tuple[str, str]:
    """A venv from the host's interpreter that sees the host's site-packages after its own."""
    _run([python, "-m", "venv", "--without-pip", str(folder)], progress, python, folder)
    staged_python = str(_overlay_python(folder))
    purelib = subprocess.run(
        [staged_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # addsitedir (not a bare path) so the host's own .pth files (editable installs, setuptools) apply too
    lines = [f"import site; site.addsitedir({site!r})" for site in host["sites"] if Path(site).is_dir()]
    Path(purelib, PTH_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    has_pip = subprocess.run([staged_python, "-m", "pip", "--version"], capture_output=True, env=_clean_env())
    if has_pip.returncode != 0:  # the host has no pip of its own to lend: give the overlay one
        _run([staged_python, "-m", "ensurepip", "--default-pip"], progress, python, folder)
    return staged_python, purelib


def _run(command: list[str], progress: Callable[[str], None], python: str, env_dir: Path) -> None:
    """Run a build step, passing each line of its output on; a failure names pip's last lines."""
    lines: list[str] = []
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env(), bufsize=1
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            line = line.rstrip()
            if line:
                lines.append(line)
                progress(line)
    except BaseException:
        # cancelled (Ctrl-C, a job stopped in the progress callback): stop pip before the staging folder is
        # removed, or it keeps writing files into it after the removal
        process.kill()
        process.wait()
        raise
    if process.wait() != 0:
        raise _build_error(python, env_dir, " / ".join(lines[-4:]) or f"{command[2]} exited {process.returncode}")


def _build_error(python: str, env_dir: Path, why: str) -> HeadshotError:
    wanted = " ".join(f"'{name}>={oldest}'" for name, oldest in TRAINER_NEEDS.items())
    return HeadshotError(
        f"building the training environment in {env_dir} failed: {why}. Fix the cause (connection, disk space, "
        "proxy, a package too old) and train again, or build it by hand to see every line: "
        f"PYTHONPATH={Path(__file__).parents[2]} {python} -m headshot.train.trainer_env {env_dir}; "
        f"or give training its own Python that has {wanted}",
        "trainer_env_failed",
    )


def _tail(text: str) -> str:
    return " / ".join(line for line in text.strip().splitlines()[-3:])


def _swap_in(staging: Path, env_dir: Path) -> None:
    """Rename the finished build into place; an older build (ours: it holds the record) is removed after."""
    old = None
    if env_dir.exists():
        old = env_dir.with_name(f".{env_dir.name}.old-{os.getpid()}")
        env_dir.rename(old)
    staging.rename(env_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m headshot.train.trainer_env ENV_DIR [HOST_PYTHON]`: build (or check) the overlay by hand."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m headshot.train.trainer_env ENV_DIR [HOST_PYTHON]", file=sys.stderr)
        return 2
    try:
        print(trainer_python(Path(argv[0]), python=argv[1] if len(argv) == 2 else sys.executable))
    except HeadshotError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
