"""AUTOMATIC1111 1.10 pins pydantic 1.10: the settings models must import and refuse alike there.

The subprocess below runs with the real pydantic 1.10.27 (the version A1111 1.10.1 installs) first on its path,
installed from the package index into a folder of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1] / "shared"
#: the exact version AUTOMATIC1111 1.10.1's venv resolves to. Since 1.10.17 it has a `pydantic.v1` package that
#: only re-exports the top-level names (`pydantic.v1.fields` is missing): found on the real host, where taking
#: `pydantic.v1` whenever it imports broke every settings model
A1111_PYDANTIC = "pydantic==1.10.27"

CHECKS = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    import pydantic
    from headshot import options
    from headshot.errors import HeadshotError
    from headshot.train.settings import TrainSettings
    from headshot.dataset.prepare_settings import PrepareSettings
    from headshot.generate.styles import parse_style

    def refusal(build):
        try:
            build()
        except HeadshotError as e:
            return [e.code, str(e)]
        return None

    base = {"dataset_dir": "/data", "base_model": "m.safetensors", "out_dir": "/out"}
    style = {"title": "T", "category": "portrait", "prompt": "photo of {subject}", "width": 512, "height": 640,
             "sampler": "euler", "cfg": 7, "steps": 20, "sdxl": {"width": 1024}}
    where = Path(tempfile.gettempdir()) / "my_style.toml"
    parsed = parse_style(style, where)
    print(json.dumps({
        "version": pydantic.VERSION,
        "api": options.pydantic_api.__name__,
        "fell_back": "pydantic.v1" not in sys.modules and options.pydantic_api is pydantic,
        "train": TrainSettings(**base, steps=40, alpha=16).resolved(10, 10, None, False).to_dict(),
        "prepare": sorted(PrepareSettings(keep=["a.jpg"], reference=["r.jpg"]).keep),
        "style": [parsed.width, parsed.for_family("sdxl").width, parsed.for_family("sdxl").family, parsed.cfg],
        "train_unknown": refusal(lambda: TrainSettings.from_dict({**base, "stesp": 400})),
        "train_wrong": refusal(lambda: TrainSettings(**base, steps="400")),
        "prepare_unknown": refusal(lambda: PrepareSettings.from_dict({"triger": "ohwx"})),
        "prepare_wrong": refusal(lambda: PrepareSettings(face_share="0.3")),
        "style_unknown": refusal(lambda: parse_style({**style, "negtive": "x"}, where)),
        "style_wrong": refusal(lambda: parse_style({**style, "width": "512"}, where)),
    }))
    """
)


def _run(bootstrap: str, first_on_path: Path | None = None) -> dict:
    path = [str(first_on_path)] if first_on_path else []
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", bootstrap + CHECKS],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(SHARED), os.environ.get("PYTHONPATH", "")])},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def pydantic_one(tmp_path_factory) -> Path:
    """The exact pydantic A1111 1.10.1's venv resolves to, installed apart from this venv's pydantic 2."""
    target = tmp_path_factory.mktemp("pydantic-one")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), A1111_PYDANTIC],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if pip.returncode != 0:
        pytest.skip(f"cannot install {A1111_PYDANTIC} from the package index here: {pip.stderr.strip()[-300:]}")
    return target


def test_settings_and_styles_validate_and_refuse_alike_under_pydantic_one_and_two(pydantic_one):
    one, two = _run("", first_on_path=pydantic_one), _run("")
    assert one["version"].startswith("1.") and one["fell_back"]  # headshot took `pydantic` itself
    assert two["version"].startswith("2.") and not two["fell_back"] and two["api"] == "pydantic.v1"
    assert one == {**two, "version": one["version"], "api": "pydantic", "fell_back": True}
    assert one["train"]["steps"] == 40 and one["train"]["alpha"] == 16.0 and one["train"]["rank"] == 32
    assert one["prepare"] == ["a.jpg"]
    assert one["style"] == [512, 1024, "sdxl", 7.0]
    assert one["train_unknown"] == [
        "unknown_option",
        "unknown setting 'stesp' for training (did you mean 'steps'?)",
    ]
    assert one["train_wrong"] == ["bad_option", "--steps '400': must be a whole number"]
    assert one["prepare_unknown"][0] == "unknown_option" and "did you mean 'trigger'?" in one["prepare_unknown"][1]
    assert one["prepare_wrong"] == ["bad_option", "--face-share '0.3': must be a number"]
    assert one["style_unknown"][0] == "invalid_style" and "(did you mean `negative`?)" in one["style_unknown"][1]
    assert one["style_wrong"][0] == "invalid_style"
    assert "field `width`: must be a whole number of pixels, not '512'." in one["style_wrong"][1]


def test_importing_the_settings_models_warns_nothing_under_pydantic_two():
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            "import headshot.train.settings, headshot.dataset.prepare, headshot.generate.styles",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SHARED), os.environ.get("PYTHONPATH", "")])},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
