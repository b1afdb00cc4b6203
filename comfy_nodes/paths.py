"""Which folders a workflow may make the nodes read and write.

A workflow is shared data (Civitai, a Discord post): a path typed into one of its widgets must
not make the nodes read a home folder, run an sd-scripts checkout from anywhere, or write
outside ComfyUI. So every path widget resolves (symlinks and '..' followed first) to a place
inside ComfyUI's input, output, temp or models folder, one of this pack's registered folders,
or a folder the person listed in the HEADSHOT_ALLOWED_DIRS environment variable. A workflow
cannot set an environment variable, so only the person running ComfyUI can widen the set.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import host

ENV = "HEADSHOT_ALLOWED_DIRS"
#: appended to the tooltip of every widget that takes a path
RULE = (
    f" Must lie inside ComfyUI's input, output or models folder; to allow other folders, list them in the "
    f"environment variable {ENV} (separated by '{os.pathsep}') before starting ComfyUI."
)


def _resolve(path: str | Path) -> Path:
    """Absolute, with '~', '..' and every symlink resolved (what the OS will really open)."""
    return Path(os.path.realpath(Path(path).expanduser()))


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
    roots += [p for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    resolved = [_resolve(str(root).strip()) for root in roots]
    found: list[Path] = []
    for root in resolved:  # a folder inside another root adds nothing (and would only lengthen the message)
        if root not in found and not any(root != other and root.is_relative_to(other) for other in resolved):
            found.append(root)
    return found


def allowed_path(path: str | Path, widget: str, shown: str | None = None) -> Path:
    """`path` resolved, when it lies inside an allowed root; else a HeadshotError naming the widget and the roots.

    `shown` is what the person typed, for the message (default: `path`).
    """
    from headshot.errors import HeadshotError

    resolved = _resolve(path)
    roots = allowed_roots()
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return resolved
    where = ", ".join(str(r) for r in roots) or "none"
    raise HeadshotError(
        f"{widget} {shown or str(path)!r} is outside the folders Headshot Studio may read and write "
        f"({where}): move the files there, or list the folder in the environment variable {ENV} "
        "and restart ComfyUI",
        "path_not_allowed",
    )


def user_path(text: str | None, widget: str, kind: str = "folder") -> Path:
    """A folder or file a widget names: absolute, or relative to ComfyUI's input folder (then its output folder).

    The place is checked against the allowed roots before anything about it is looked at, so
    the error never tells a workflow whether a file outside them exists.
    """
    from headshot.errors import HeadshotError

    raw = (text or "").strip().strip('"')
    if not raw:
        raise HeadshotError(f"{widget}: no path given; type the {kind}'s path", "no_path")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        fp = host.folder_paths()
        bases = [Path(fp.get_input_directory()), Path(fp.get_output_directory())] if fp is not None else []
        candidates = [base / path for base in bases]
        path = next((c for c in candidates if c.exists()), candidates[0] if candidates else path)
    resolved = allowed_path(path, widget, shown=raw)
    found = resolved.is_dir() if kind == "folder" else resolved.is_file()
    if not found:
        raise HeadshotError(
            f"{widget} {raw!r} is not a {kind} (relative paths are looked up in ComfyUI's input "
            "folder, then its output folder)",
            "not_found",
        )
    return resolved
