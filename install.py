"""Install hook for AUTOMATIC1111/Forge (run with `launch` importable) and ComfyUI-Manager.

Idempotent and quiet: it installs only what cannot be imported, so a host whose packages are all
present sees no pip call at all. Packages that exist in rival builds (onnxruntime vs
onnxruntime-gpu, dlib vs dlib-bin) are installed only when no build of them is present.

It never upgrades or downgrades what the host has: every pip call gets a constraints file holding the
exact version of every distribution installed in this interpreter. When a package cannot be added on
those terms, one line says which feature stays off and why; the host and the tab keep running.
The training stack (diffusers, peft, newer transformers) is never installed here: training builds
its own environment on first use when the host's cannot train (headshot.train.trainer_env).
"""

import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile

# module to import -> what pip installs when it is missing -> what works only with it
NEEDED = [
    ("PIL", "pillow", "reading photos"),
    ("numpy", "numpy", "every picture step"),
    # any build (onnxruntime-gpu, -directml, -silicon) provides it
    ("onnxruntime", "onnxruntime", "the insightface face backend and the caption tagger"),
    ("dlib", "dlib-bin", "the dlib face backend"),  # a prebuilt dlib: no compiler, no CMake
    # >=0.3.0: older releases lack the 5-point landmark model; A1111's pip runs with --prefer-binary, which
    # would pick 0.1.3 (a wheel) over 0.3.0 (source only) without the bound
    ("face_recognition_models", "face_recognition_models>=0.3.0", "the dlib face backend"),
    ("tomli_w", "tomli-w", "writing dataset and sd-scripts settings"),
    ("filelock", "filelock", "one writer per output folder"),
    # settings are validated with pydantic's 1.10 API, which pydantic 2 also ships: any host's copy will do
    ("pydantic", "pydantic>=1.10,<3", "validated settings"),
]
if sys.version_info < (3, 11):
    NEEDED.append(("tomli", "tomli", "reading dataset settings"))

_PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9.]+)?$", re.IGNORECASE)


#: a module can be there and still too old: a file that only the needed release ships
NEEDED_FILES = {"face_recognition_models": "models/shape_predictor_5_face_landmarks.dat"}


def present(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return False
    needed = NEEDED_FILES.get(module)
    folders = list(spec.submodule_search_locations or [])
    return needed is None or any(os.path.isfile(os.path.join(folder, needed)) for folder in folders)


def missing() -> list[str]:
    return [package for module, package, _feature in NEEDED if not present(module)]


def installed_versions() -> dict:
    """Every distribution this interpreter imports from, at the version it would import (first on sys.path)."""
    versions: dict = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if name and dist.version and key not in versions:
            versions[key] = (name, dist.version)
    return dict(versions.values())


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def write_constraints(replaceable: tuple[str, ...] = ()) -> str:
    """A temporary pip constraints file pinning everything installed except `replaceable` (a too-old copy of a
    package only we need, e.g. face_recognition_models 0.1.3); the caller removes it."""
    keep = {_key(name) for name in replaceable}
    lines = [
        f"{name}=={version}" if _PEP440.match(version) else f"{name}==={version}"  # === holds odd local versions
        for name, version in sorted(installed_versions().items(), key=lambda item: item[0].lower())
        if _key(name) not in keep
    ]
    handle, path = tempfile.mkstemp(prefix="headshot-host-constraints-", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.write("# what this WebUI has installed: never changed by Headshot Studio\n" + "\n".join(lines) + "\n")
    return path


def _launch():
    try:
        import launch  # A1111/Forge run this file with their root on the path
    except ImportError:
        return None
    return launch if hasattr(launch, "run_pip") else None


def pip_install(package: str, constraints: str) -> None:
    """Raise (RuntimeError from A1111's run_pip, CalledProcessError here) when pip cannot install it."""
    launch = _launch()
    if launch is not None:
        command = f"install {shlex.quote(package)} -c {shlex.quote(constraints)}"  # run_pip goes through a shell
        launch.run_pip(command, f"Headshot Studio requirement: {package}")
    else:
        run = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", package, "-c", constraints],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise subprocess.CalledProcessError(run.returncode, run.args, run.stdout, run.stderr)


def _why(exc: Exception) -> str:
    text = "\n".join(str(part) for part in (getattr(exc, "stderr", None), getattr(exc, "stdout", None), exc) if part)
    conflict = re.search(r"(The conflict is caused by:.*?)(?:\n\n|To fix|$)", text, re.S)
    if conflict or "ResolutionImpossible" in text or "conflicting dependencies" in text:
        detail = " ".join(conflict.group(1).split()) if conflict else "see pip's output above"
        return f"it would need a version of a package this WebUI already has ({detail})"
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("ERROR")]
    return errors[-1] if errors else (text.strip().splitlines() or [type(exc).__name__])[-1]


def main() -> None:
    wanted = [(package, feature) for module, package, feature in NEEDED if not present(module)]
    if not wanted:
        return
    too_old = tuple(m for m, _package, _f in NEEDED if m in NEEDED_FILES and importlib.util.find_spec(m) is not None)
    constraints = write_constraints(replaceable=too_old)
    try:
        for package, feature in wanted:
            try:
                pip_install(package, constraints)
            except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                print(
                    f"Headshot Studio: {feature} stays off: {package} was not installed because {_why(exc)}. "
                    "Nothing of the WebUI was changed; the tab still loads.",
                    flush=True,
                )
    finally:
        os.unlink(constraints)


if __name__ == "__main__":
    main()
