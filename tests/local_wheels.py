"""Tiny real wheels and throwaway venvs for tests that run pip offline (a helper module, not a test file).

A wheel is a zip with the package and a dist-info folder; writing one by hand needs no build backend,
so pip installs it with --no-index from a local folder and never reaches a registry.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # venvs made from it have nothing installed


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel whose module `name` (dashes as underscores) records its own version."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    metadata = "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: local_wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def offline_pip_env(wheels: Path) -> dict:
    """pip settings that find packages only in `wheels`."""
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PIP_CONSTRAINT", None)
    return env


def make_venv(folder: Path, *, pip: bool) -> Path:
    """A venv from the base interpreter (no ensurepip: it takes half a minute on a busy machine); with
    `pip`, this interpreter's own pip is linked in. Returns its python."""
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    python = folder / "bin" / "python"
    if pip:
        import pip as own_pip

        source = Path(own_pip.__file__).parent
        target = site_packages(python)
        for path in [source, *source.parent.glob(f"pip-{own_pip.__version__}.dist-info")]:
            (target / path.name).symlink_to(path, target_is_directory=True)
    return python


def pip_install_into(python: Path, wheels: Path, *requirements: str) -> None:
    """Install local wheels into another interpreter's environment with this interpreter's pip."""
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", *requirements],
        check=True,
        capture_output=True,
        env=offline_pip_env(wheels),
    )


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def version_in(python: Path, name: str) -> str | None:
    code = (
        "import sys; from importlib import metadata\n"
        "try: print(metadata.version(sys.argv[1]))\n"
        "except metadata.PackageNotFoundError: print('')"
    )
    out = subprocess.run([str(python), "-c", code, name], check=True, capture_output=True, text=True).stdout.strip()
    return out or None
