"""install.py never changes what the host has: real pip runs, offline, against local wheels in a throwaway venv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from local_wheels import make_venv, make_wheel, offline_pip_env, pip_install_into, version_in
from test_install import _load_install

ROOT = Path(__file__).resolve().parents[1]


def test_the_constraints_file_pins_every_installed_distribution_at_its_version():
    from importlib import metadata

    install = _load_install()
    path = install.write_constraints()
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line and not line.startswith("#")]
    finally:
        Path(path).unlink()
    pins = dict(line.replace("===", "==").split("==", 1) for line in lines)
    for name in ("torch", "numpy", "pydantic", "transformers", "pip"):
        assert pins[name] == metadata.version(name), name
    assert len(pins) == len({d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()})


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A throwaway 'WebUI' venv with pip: hs-pinned-dep 1.0 installed, as a WebUI pins its packages."""
    root = tmp_path_factory.mktemp("install_hook")
    wheels = root / "wheels"
    make_wheel(wheels, "hs-pinned-dep", "1.0")
    make_wheel(wheels, "hs-pinned-dep", "2.0")
    make_wheel(wheels, "hs-needs-newer", "1.0", requires=("hs-pinned-dep>=2",))
    make_wheel(wheels, "hs-fits", "1.0", requires=("hs-pinned-dep>=1",))
    python = make_venv(root / "webui", pip=True)
    pip_install_into(python, wheels, "hs-pinned-dep==1.0")
    return python, wheels


def _run_hook(python: Path, wheels: Path, needed: list) -> subprocess.CompletedProcess:
    """install.main() inside the host's python with NEEDED set, as ComfyUI-Manager runs it (no `launch`)."""
    code = (
        "import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('hook', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "m.NEEDED = [tuple(x) for x in json.loads(sys.argv[2])]; m.main()"
    )
    return subprocess.run(
        [str(python), "-c", code, str(ROOT / "install.py"), json.dumps(needed)],
        capture_output=True,
        text=True,
        env=offline_pip_env(wheels),
        timeout=120,
    )


def test_a_package_that_would_upgrade_a_host_package_is_refused_with_one_line(host):
    python, wheels = host
    run = _run_hook(python, wheels, [["hs_needs_newer", "hs-needs-newer", "the newer feature"]])
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, run.stdout
    assert lines[0].startswith("Headshot Studio: the newer feature stays off: hs-needs-newer was not installed")
    assert "hs-pinned-dep" in lines[0] and "the tab still loads" in lines[0]
    assert version_in(python, "hs-pinned-dep") == "1.0", "the host's package was changed"
    assert version_in(python, "hs-needs-newer") is None


def test_a_package_that_fits_the_host_is_installed_and_the_next_run_does_nothing(host):
    python, wheels = host
    needed = [["hs_fits", "hs-fits", "the fitting feature"]]
    first = _run_hook(python, wheels, needed)
    assert first.returncode == 0 and first.stdout.strip() == "", first.stdout + first.stderr
    assert version_in(python, "hs-fits") == "1.0" and version_in(python, "hs-pinned-dep") == "1.0"
    again = _run_hook(python, wheels / "nowhere", needed)  # no wheels at all: pip must not even run
    assert again.returncode == 0 and again.stdout.strip() == "", again.stdout + again.stderr


def test_under_a1111_run_pip_gets_the_constraints_and_a_failure_is_one_line(monkeypatch, capsys):
    """A1111's launch.run_pip raises RuntimeError with pip's output; the host is not running here."""
    install = _load_install()
    seen = []

    def run_pip(command, desc):
        seen.append(command)
        constraints = Path(command.split(" -c ")[1])
        assert "numpy==" in constraints.read_text()
        raise RuntimeError(
            "Couldn't install x.\nstderr: ERROR: Cannot install x because these package versions have "
            "conflicting dependencies.\n\nThe conflict is caused by:\n    x 1.0 depends on numpy>=99\n"
            "    The user requested (constraint) numpy==1.26.2\n\nTo fix this you could try to:"
        )

    monkeypatch.setitem(sys.modules, "launch", type(sys)("launch"))
    monkeypatch.setattr(sys.modules["launch"], "run_pip", run_pip, raising=False)
    monkeypatch.setattr(install, "NEEDED", [("surely_not_a_module_xyz", "x", "the x feature")])
    install.main()
    out = capsys.readouterr().out
    assert seen and seen[0].startswith("install x -c ")
    assert not Path(seen[0].split(" -c ")[1]).exists(), "the temporary constraints file was left behind"
    assert out.count("\n") == 1 and "the x feature stays off" in out and "numpy>=99" in out


def test_install_hook_never_installs_the_training_stack():
    install = _load_install()
    packages = " ".join(package for _module, package, _feature in install.NEEDED)
    assert not any(name in packages for name in ("diffusers", "peft", "transformers", "torch"))
