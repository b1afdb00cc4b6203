"""The import direction (docs/ARCHITECTURE.md) is enforced by import-linter's contracts in pyproject.toml.

These tests run the real `lint-imports` on the real package: once as it is (the contracts hold) and once on
a copy with one upward import added (the contract must break, naming the offending line), so a contract
that silently stopped checking anything would fail here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(),
    reason="import-linter is not installed (pip install import-linter, or use the README's test command)",
)


def contracts_config(folder: Path) -> Path:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    config = folder / "importlinter.toml"
    config.write_text(text[text.index("[tool.importlinter]") :], encoding="utf-8")
    return config


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=package_parent,
        timeout=300,
    )


def test_the_package_keeps_every_contract(tmp_path):
    result = lint_imports(ROOT / "shared", contracts_config(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_lower_stage_importing_a_higher_one_breaks_the_contract(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "shared" / "headshot", copy / "headshot", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "headshot" / "faces" / "base.py", "a", encoding="utf-8") as f:
        f.write("\nfrom headshot.finish import detailer  # faces reaching up into finish\n")
    result = lint_imports(copy, contracts_config(tmp_path))
    assert result.returncode != 0
    assert "headshot.faces is not allowed to import headshot.finish" in result.stdout


def test_the_core_importing_a_host_breaks_the_contract(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "shared" / "headshot", copy / "headshot", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "headshot" / "photos.py", "a", encoding="utf-8") as f:
        f.write("\nimport folder_paths  # a ComfyUI module: the core must take paths from its adapter\n")
    result = lint_imports(copy, contracts_config(tmp_path))
    assert result.returncode != 0
    assert "folder_paths" in result.stdout
