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
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: calls.append(a))
    install.main()
    assert install.missing() == [] and calls == []


def test_a_missing_module_is_installed_through_a1111_run_pip(monkeypatch):
    install = _load_install()
    calls = []
    monkeypatch.setitem(sys.modules, "launch", types.SimpleNamespace(run_pip=lambda cmd, desc: calls.append(cmd)))
    monkeypatch.setattr(install, "NEEDED", [("surely_not_a_module_xyz", "some-package")])
    install.main()
    assert calls == ["install some-package"]


def test_outside_a1111_pip_runs_in_the_host_python(monkeypatch):
    install = _load_install()
    calls = []
    monkeypatch.setitem(sys.modules, "launch", None)  # `import launch` fails, as under ComfyUI-Manager
    monkeypatch.setattr(subprocess, "check_call", lambda args: calls.append(args))
    monkeypatch.setattr(install, "NEEDED", [("surely_not_a_module_xyz", "some-package")])
    install.main()
    assert calls == [[sys.executable, "-m", "pip", "install", "some-package"]]


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
