"""install.py as A1111 (launch.run_pip) and ComfyUI-Manager (plain python) run it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_install():
    spec = importlib.util.spec_from_file_location("headshot_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nothing_is_installed_when_everything_imports(monkeypatch):
    install = _load_install()
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    install.main()
    assert install.missing() == [] and calls == []


def test_a_missing_module_is_installed_through_a1111_run_pip(monkeypatch):
    install = _load_install()
    calls = []
    monkeypatch.setitem(sys.modules, "launch", types.SimpleNamespace(run_pip=lambda cmd, desc: calls.append(cmd)))
    monkeypatch.setattr(install, "NEEDED", [("surely_not_a_module_xyz", "some-package", "a feature")])
    install.main()
    assert len(calls) == 1 and calls[0].startswith("install some-package -c ")  # -c: the host's versions


def test_outside_a1111_pip_runs_in_the_host_python(monkeypatch):
    install = _load_install()
    calls = []
    monkeypatch.setitem(sys.modules, "launch", None)  # `import launch` fails, as under ComfyUI-Manager
    monkeypatch.setattr(
        subprocess, "run", lambda args, **kw: calls.append(args) or subprocess.CompletedProcess(args, 0)
    )
    monkeypatch.setattr(install, "NEEDED", [("surely_not_a_module_xyz", "some-package", "a feature")])
    install.main()
    assert len(calls) == 1 and calls[0][:3] == [sys.executable, "-m", "pip"] and "some-package" in calls[0]


def test_requirements_never_pin_torch_or_rival_builds():
    lines = [line.split(";")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = {
        line.split("=")[0].split(">")[0].split("<")[0].lower() for line in lines if line and not line.startswith("#")
    }
    assert not names & {"torch", "torchvision", "onnxruntime", "onnxruntime-gpu", "dlib", "dlib-bin"}


@pytest.mark.parametrize("entry", ["__init__.py", "scripts/headshot_studio.py"])
def test_host_entry_points_import_without_host_modules(entry):
    """ComfyUI imports the root package, A1111 the scripts/ shim: both must import cleanly alone."""
    code = (
        f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('pack', r'{ROOT / entry}', "
        f"submodule_search_locations=[r'{ROOT}'] if '{entry}' == '__init__.py' else None); "
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m); "
        "import headshot; print('ok')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr


def test_a_too_old_face_models_package_is_replaced_with_one_that_has_the_landmark_model(monkeypatch, tmp_path):
    """Seen on a real A1111 1.10.1: its run_pip adds --prefer-binary, so a bare "face_recognition_models" gave
    0.1.3 (a wheel without shape_predictor_5_face_landmarks.dat) and the dlib backend stayed off."""
    install = _load_install()
    old = tmp_path / "face_recognition_models"
    (old / "models").mkdir(parents=True)
    (old / "__init__.py").write_text("")
    (old / "models" / "shape_predictor_68_face_landmarks.dat").write_bytes(b"")  # what 0.1.3 ships
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(install, "NEEDED", [n for n in install.NEEDED if n[0] == "face_recognition_models"])
    calls = []

    def run_pip(command, desc):
        constraints = Path(command.split(" -c ")[1].strip("'"))
        calls.append((command, constraints.read_text()))

    monkeypatch.setitem(sys.modules, "launch", types.SimpleNamespace(run_pip=run_pip))
    monkeypatch.setattr(install, "installed_versions", lambda: {"face_recognition_models": "0.1.3", "numpy": "1.26.2"})
    assert install.missing() == ["face_recognition_models>=0.3.0"]
    install.main()
    ((command, constraints),) = calls
    assert command.startswith("install 'face_recognition_models>=0.3.0' -c ")
    assert "numpy==1.26.2" in constraints and "face_recognition_models" not in constraints  # only it may change
    (old / "models" / "shape_predictor_5_face_landmarks.dat").write_bytes(b"")  # what 0.3.0 ships
    assert install.missing() == []
