"""Install hook for AUTOMATIC1111/Forge (run with `launch` importable) and ComfyUI-Manager.

Idempotent and quiet: it installs only what cannot be imported, so a host whose packages are all
present sees no pip call at all. Packages that exist in rival builds (onnxruntime vs
onnxruntime-gpu, dlib vs dlib-bin) are installed only when no build of them is present.
"""

import importlib.util
import subprocess
import sys

# module to import -> what pip installs when it is missing
NEEDED = [
    ("PIL", "pillow"),
    ("numpy", "numpy"),
    ("onnxruntime", "onnxruntime"),  # any build (onnxruntime-gpu, -directml, -silicon) provides it
    ("dlib", "dlib-bin"),  # a prebuilt dlib: no compiler, no CMake
    ("face_recognition_models", "face_recognition_models"),
    ("tomli_w", "tomli-w"),  # writes the dataset and sd-scripts TOMLs
    ("filelock", "filelock"),  # one writer per output folder
    # settings are validated with pydantic's 1.10 API, which pydantic 2 also ships: any host's copy will do
    ("pydantic", "pydantic>=1.10,<3"),
]
if sys.version_info < (3, 11):
    NEEDED.append(("tomli", "tomli"))


def missing() -> list[str]:
    return [package for module, package in NEEDED if importlib.util.find_spec(module) is None]


def pip_install(package: str) -> None:
    try:
        import launch  # A1111/Forge run this file with their root on the path
    except ImportError:
        launch = None
    if launch is not None and hasattr(launch, "run_pip"):
        launch.run_pip(f"install {package}", f"Headshot Studio requirement: {package}")
    else:
        subprocess.check_call([sys.executable, "-m", "pip", "install", package])


def main() -> None:
    for package in missing():
        pip_install(package)


if __name__ == "__main__":
    main()
