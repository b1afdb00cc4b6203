"""The A1111 discovery shim (scripts/headshot_studio.py) must leave the core importable after the WebUI puts
its sys.path back: A1111 1.10's script loader rebinds sys.path around each script and restores it after, so
paths a script adds are gone by the time the tab is built (seen on a real A1111 1.10.1: "No module named
'headshot'" from the tab)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD_LIKE_A1111 = """
import runpy, sys
saved = sys.path
sys.path = [sys.argv[1]] + sys.path  # what modules/scripts.py does for an extension's script
try:
    runpy.run_path(sys.argv[2])
finally:
    sys.path = saved
import headshot.errors, headshot.outputs  # what the tab and routes import later (stdlib-only modules)
print("ok")
"""


def test_the_core_stays_importable_after_the_webui_restores_sys_path(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            LOAD_LIKE_A1111,  # -S: not the editable install in this venv
            str(ROOT / "scripts"),
            str(ROOT / "scripts" / "headshot_studio.py"),
        ],
        cwd=tmp_path,  # not the checkout: nothing else puts the core on the path
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
