"""Which folders a host adapter may read and write when a path comes from shared data or a request.

A ComfyUI workflow (Civitai, a Discord post) or an HTTP request to a WebUI is data from someone else:
a path typed into it must not make us read a home folder, run code from anywhere, or write outside
the host. So every such path resolves (symlinks and '..' followed first) to a place inside the
folders the host allows (its input, output, models folders…), or one the person listed in the
environment variable HEADSHOT_ALLOWED_DIRS. A workflow or request cannot set an environment
variable, so only the person running the host can widen the set. Each host names its own roots.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import HeadshotError

ENV = "HEADSHOT_ALLOWED_DIRS"


def resolve(path: str | Path) -> Path:
    """Absolute, with '~', '..' and every symlink resolved (what the OS will really open)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def allowed_roots(host_roots: Iterable[str | Path]) -> list[Path]:
    """The host's roots plus the person's HEADSHOT_ALLOWED_DIRS, resolved, in order, without repeats or
    folders inside another root (they add nothing and would only lengthen a message)."""
    roots = [str(r).strip() for r in host_roots if str(r).strip()]
    roots += [p.strip() for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    resolved = [resolve(root) for root in roots]
    found: list[Path] = []
    for root in resolved:
        if root not in found and not any(root != other and root.is_relative_to(other) for other in resolved):
            found.append(root)
    return found


def confine(path: str | Path, roots: list[Path], what: str, host: str, shown: str | None = None) -> Path:
    """`path` resolved, when it lies inside one of `roots` (from allowed_roots); else HeadshotError
    "path_not_allowed" naming `what` (the field), the roots and the fix. `shown`: what the person typed."""
    resolved = resolve(path)
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return resolved
    where = ", ".join(str(r) for r in roots) or "none"
    raise HeadshotError(
        f"{what} {shown or str(path)!r} is outside the folders Headshot Studio may read and write "
        f"({where}): move the files there, or list the folder in the environment variable {ENV} "
        f"and restart {host}",
        "path_not_allowed",
    )


def confined_existing(
    text: str | None,
    what: str,
    roots: list[Path],
    host: str,
    bases: list[Path],
    kind: str = "folder",
    bases_hint: str = "",
) -> Path:
    """A folder or file someone named: absolute, or relative to the first of `bases` where it exists.

    The place is checked against the roots before anything about it is looked at, so the error never
    tells a request whether a file outside them exists."""
    raw = (text or "").strip().strip('"')
    if not raw:
        raise HeadshotError(f"{what}: no path given; type the {kind}'s path", "no_path")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        candidates = [base / path for base in bases]
        path = next((c for c in candidates if c.exists()), candidates[0] if candidates else path)
    resolved = confine(path, roots, what, host, shown=raw)
    found = resolved.is_dir() if kind == "folder" else resolved.is_file()
    if not found:
        raise HeadshotError(f"{what} {raw!r} is not a {kind}{bases_hint}", "not_found")
    return resolved
