"""The training Python: a host that can train is used as is; one that cannot gets an overlay venv built once.

Real subprocesses and a real pip, offline: the 'host' is a throwaway venv with pip, the packages are tiny
wheels written by the test (tests/local_wheels.py), and TRAINER_NEEDS / HOST_OWNED / STACK_CHECK name
those packages instead of the real multi-gigabyte stack (the real needs are measured in the module's
docstring and checked against the project's own venv below).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from local_wheels import make_venv, make_wheel, offline_pip_env, pip_install_into, site_packages, version_in

from headshot.errors import HeadshotError
from headshot.train import trainer_env


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheels")
    for name, version in [("hs-train-lib", "1.0"), ("hs-train-lib", "2.0"), ("hs-host-only", "1.0")]:
        make_wheel(folder, name, version)
    make_wheel(folder, "hs-host-only", "1.1")
    return folder


def _make_host(folder: Path, wheels: Path) -> str:
    """A 'WebUI' venv: pip, hs-train-lib 1.0 (too old to train) and hs-host-only 1.0 (the host's 'torch')."""
    python = make_venv(folder, pip=True)
    pip_install_into(python, wheels, "hs-train-lib==1.0", "hs-host-only==1.0")
    return str(python)


@pytest.fixture(scope="module")
def host(tmp_path_factory, wheels):
    return _make_host(tmp_path_factory.mktemp("host") / "webui", wheels)


@pytest.fixture(autouse=True)
def dummy_needs(monkeypatch, wheels):
    for key, value in offline_pip_env(wheels).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(trainer_env, "TRAINER_NEEDS", {"hs-train-lib": "2.0"})
    monkeypatch.setattr(trainer_env, "HOST_OWNED", ("hs-host-only",))
    monkeypatch.setattr(trainer_env, "BUILD_COMPANIONS", {})
    monkeypatch.setattr(trainer_env, "STACK_CHECK", "import hs_train_lib; assert hs_train_lib.VERSION == '2.0'")


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".building-" in p.name or ".old-" in p.name)


def test_the_probe_names_what_is_missing_or_too_old(host, monkeypatch):
    monkeypatch.setattr(trainer_env, "TRAINER_NEEDS", {"hs-train-lib": "2.0", "hs-absent": "1.0", "hs-host-only": "1"})
    assert trainer_env.missing_for_training(host) == ["hs-train-lib>=2.0", "hs-absent>=1.0"]


def test_the_real_needs_are_met_by_the_projects_own_venv(monkeypatch):
    monkeypatch.undo()
    assert trainer_env.missing_for_training(sys.executable) == []


def test_a_host_that_can_train_is_used_as_is(host, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_env, "TRAINER_NEEDS", {"hs-train-lib": "1.0"})
    assert trainer_env.trainer_python(tmp_path / "env", progress=print, python=host) == host
    assert not (tmp_path / "env").exists()


def test_the_overlay_is_built_once_sees_the_host_and_leaves_it_untouched(host, tmp_path):
    lines: list[str] = []
    python = trainer_env.trainer_python(tmp_path / "env", progress=lines.append, python=host)
    assert python == str(tmp_path / "env" / "bin" / "python")
    assert "hs-train-lib 1.0 (needs 2.0 or newer)" in lines[0] and str(tmp_path / "env") in lines[0]
    assert any("Successfully installed hs-train-lib-2.0" in line for line in lines), lines  # pip's own lines
    assert version_in(Path(python), "hs-train-lib") == "2.0"
    assert version_in(Path(host), "hs-train-lib") == "1.0", "the host was changed"
    # the host's packages come from the host's folder, not a copy
    where = "import hs_host_only, sys; print(hs_host_only.__file__)"
    import subprocess

    seen = subprocess.run([python, "-c", where], capture_output=True, text=True, check=True).stdout.strip()
    assert seen.startswith(str(site_packages(Path(host))))
    record = json.loads((tmp_path / "env" / trainer_env.RECORD_NAME).read_text())
    assert record["installed"] == {"hs-train-lib": "2.0"} and record["host_had"] == {"hs-train-lib": "1.0"}
    assert record["host_pins"] == {"hs-host-only": "1.0"} and record["host_python"] == host
    assert _leftovers(tmp_path) == []

    again: list[str] = []
    start = time.monotonic()
    assert trainer_env.trainer_python(tmp_path / "env", progress=again.append, python=host) == python
    assert time.monotonic() - start < 1.0 and again == []


def test_two_callers_at_once_build_one_environment(host, tmp_path):
    lines: list[str] = []
    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(trainer_env.trainer_python(tmp_path / "env", lines.append, host))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert sum("Building a training environment" in line for line in lines) == 1


def test_a_failed_build_leaves_nothing_and_names_cause_and_fix(host, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_env, "TRAINER_NEEDS", {"hs-train-lib": "3.0"})  # no such wheel
    with pytest.raises(HeadshotError) as caught:
        trainer_env.trainer_python(tmp_path / "env", progress=lambda line: None, python=host)
    message = str(caught.value)
    assert caught.value.code == "trainer_env_failed"
    assert "hs-train-lib>=3.0" in message and "No matching distribution" in message
    assert "-m headshot.train.trainer_env" in message  # how to build it by hand
    assert not (tmp_path / "env").exists() and _leftovers(tmp_path) == []


def test_an_interrupted_build_is_never_used(host, tmp_path, monkeypatch):
    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def watched_popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    def interrupt(line: str) -> None:
        if "Processing" in line or "Installing" in line or "Looking" in line:
            raise KeyboardInterrupt  # Ctrl-C while pip runs

    monkeypatch.setattr(trainer_env.subprocess, "Popen", watched_popen)
    with pytest.raises(KeyboardInterrupt):
        trainer_env.trainer_python(tmp_path / "env", progress=interrupt, python=host)
    # pip is stopped, not left writing into the staging folder after its removal
    assert started and all(process.poll() is not None for process in started)
    assert not (tmp_path / "env").exists() and _leftovers(tmp_path) == []
    lines: list[str] = []
    trainer_env.trainer_python(tmp_path / "env", progress=lines.append, python=host)
    assert "Building" in lines[0]


def test_a_host_update_rebuilds_the_overlay(tmp_path, wheels):
    host = _make_host(tmp_path / "webui", wheels)
    trainer_env.trainer_python(tmp_path / "env", progress=lambda line: None, python=host)
    pip_install_into(Path(host), wheels, "hs-host-only==1.1")  # the WebUI updated its 'torch'
    lines: list[str] = []
    trainer_env.trainer_python(tmp_path / "env", progress=lines.append, python=host)
    assert lines and "Building" in lines[0]
    record = json.loads((tmp_path / "env" / trainer_env.RECORD_NAME).read_text())
    assert record["host_pins"] == {"hs-host-only": "1.1"}
    assert (tmp_path / "env" / "host-constraints.txt").read_text() == "hs-host-only==1.1\n"


def test_a_folder_that_is_not_ours_is_never_replaced(host, tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "notes.txt").write_text("mine")
    with pytest.raises(HeadshotError) as caught:
        trainer_env.trainer_python(tmp_path / "env", progress=lambda line: None, python=host)
    assert caught.value.code == "would_overwrite" and (tmp_path / "env" / "notes.txt").read_text() == "mine"
