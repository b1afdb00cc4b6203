"""Finding an OpenPose ControlNet by name in the folders hosts keep them in.

`--controlnet NAME` is a path, or a name looked up in: each `--controlnet-dir`, then ComfyUI's
models/controlnet under $COMFYUI_PATH, A1111/Forge's models/ControlNet under $A1111_PATH, and
the same two folders under the current folder (running from a host's root). A name matches a
file with or without its extension, or a diffusers folder (one holding config.json).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import HeadshotError

CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".bin")
# (environment variable naming a host's root, the host's ControlNet folder under it)
HOST_FOLDERS = (("COMFYUI_PATH", "models/controlnet"), ("A1111_PATH", "models/ControlNet"))


def host_model_dirs(
    host_folders: Iterable[tuple[str, str]],
    extra: Iterable[str | Path] = (),
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> list[Path]:
    """The folders searched for a model kind, in order: `extra`, each host's folder under the root its environment
    variable names, then the same folders under `cwd` (running from a host's root); each once."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    host_folders = list(host_folders)
    dirs = [Path(d).expanduser() for d in extra]
    dirs += [Path(environ[var]).expanduser() / sub for var, sub in host_folders if environ.get(var)]
    dirs += [cwd / sub for _, sub in host_folders]
    return list(dict.fromkeys(dirs))


def controlnet_dirs(
    extra: Iterable[str | Path] = (), environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> list[Path]:
    return host_model_dirs(HOST_FOLDERS, extra, environ, cwd)


def _is_controlnet(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in CONTROLNET_SUFFIXES) or (path / "config.json").is_file()


def available_controlnets(dirs: Iterable[Path]) -> list[str]:
    """The ControlNet files and diffusers folders in `dirs`, by name."""
    names = []
    for folder in dirs:
        if folder.is_dir():
            names += [p.name for p in sorted(folder.iterdir()) if _is_controlnet(p) and p.name not in names]
    return names


def find_controlnet(name_or_path: str | Path, dirs: Iterable[str | Path] = ()) -> Path:
    """The ControlNet `name_or_path` names: an existing file or diffusers folder, or a name found in
    `dirs` (see `controlnet_dirs`); case-insensitive when nothing matches exactly. Not found: a
    HeadshotError listing the folders searched and the ControlNets that are there."""
    raw = str(name_or_path).strip()
    given = Path(raw).expanduser()
    if raw and (given.is_file() or given.is_dir()):
        return given
    folders = [Path(d) for d in dirs]
    names = [raw] + ([raw + s for s in CONTROLNET_SUFFIXES] if given.suffix.lower() not in CONTROLNET_SUFFIXES else [])
    for exact in (True, False):
        for folder in folders:
            if not folder.is_dir():
                continue
            for candidate in [folder / n for n in names] if exact else sorted(folder.iterdir()):
                if (exact or candidate.name.lower() in {n.lower() for n in names}) and _is_controlnet(candidate):
                    return candidate
    searched = ", ".join(f"{d}{'' if d.is_dir() else ' (does not exist)'}" for d in folders) or "no folders"
    present = available_controlnets(folders)
    there = f" ControlNets there now: {', '.join(present)}." if present else " No ControlNet files are there now."
    raise HeadshotError(
        f"--controlnet {raw}: not found. Searched: {searched}.{there} Give the file's or diffusers folder's path, "
        "a name in one of those folders, or add a folder with --controlnet-dir (ComfyUI keeps them in "
        "models/controlnet, A1111/Forge in models/ControlNet; set COMFYUI_PATH or A1111_PATH to search those).",
        "controlnet_missing",
    )
