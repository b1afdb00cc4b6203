"""Which folders a workflow may make the nodes read and write.

A workflow is shared data (Civitai, a Discord post): a path typed into one of its widgets must
not make the nodes read a home folder, run an sd-scripts checkout from anywhere, or write
outside ComfyUI. So every path widget resolves (symlinks and '..' followed first) to a place
inside ComfyUI's input, output, temp or models folder, one of this pack's registered folders,
or a folder the person listed in the HEADSHOT_ALLOWED_DIRS environment variable. The rule itself
is the core's (headshot.allowed_paths, shared with the A1111 extension); this module names ComfyUI's roots.
"""

from __future__ import annotations

import os
from pathlib import Path

from headshot.allowed_paths import ENV, confine, confined_existing
from headshot.allowed_paths import allowed_roots as _allowed

from . import host

#: appended to the tooltip of every widget that takes a path
RULE = (
    f" Must lie inside ComfyUI's input, output or models folder; to allow other folders, list them in the "
    f"environment variable {ENV} (separated by '{os.pathsep}') before starting ComfyUI."
)
HOST = "ComfyUI"


def allowed_roots() -> list[Path]:
    """The folders path widgets may point into, resolved, in a stable order without repeats."""
    fp = host.folder_paths()
    roots: list[str | Path] = []
    if fp is not None:
        roots += [fp.get_input_directory(), fp.get_output_directory(), fp.get_temp_directory(), fp.models_dir]
    else:  # outside ComfyUI the pack's jobs and temporary files live in the system's temp folder
        roots.append(host.temp_dir())
    for key in (*host.MODEL_FOLDERS, host.JOBS_KEY):  # the person's own extra_model_paths.yaml entries
        roots += host.folder_dirs(key)
    return _allowed(roots)


def allowed_path(path: str | Path, widget: str, shown: str | None = None) -> Path:
    """`path` resolved, when it lies inside an allowed root; else a HeadshotError naming the widget and the roots.

    `shown` is what the person typed, for the message (default: `path`).
    """
    return confine(path, allowed_roots(), widget, HOST, shown=shown)


def user_path(text: str | None, widget: str, kind: str = "folder") -> Path:
    """A folder or file a widget names: absolute, or relative to ComfyUI's input folder (then its output folder).

    The place is checked against the allowed roots before anything about it is looked at, so
    the error never tells a workflow whether a file outside them exists.
    """
    fp = host.folder_paths()
    bases = [Path(fp.get_input_directory()), Path(fp.get_output_directory())] if fp is not None else []
    return confined_existing(
        text,
        widget,
        allowed_roots(),
        HOST,
        bases,
        kind,
        " (relative paths are looked up in ComfyUI's input folder, then its output folder)",
    )
