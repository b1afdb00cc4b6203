"""AUTOMATIC1111 1.10 pins pydantic 1.10: the settings models must import and refuse alike there.

The subprocess below stands in for that host: before headshot is imported, `import pydantic` gives the
pydantic 1.10 API (pydantic 2's own copy of it) and `import pydantic.v1` fails, as under pydantic 1.10.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1] / "shared"

# Load every module of pydantic.v1, then make it *the* pydantic and forget the name pydantic.v1: its modules
# import each other by their full names, which stay in sys.modules.
AS_ON_A1111 = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import pydantic.v1 as api
    for module in pkgutil.iter_modules(api.__path__):
        try:
            importlib.import_module("pydantic.v1." + module.name)
        except ImportError:  # plugins for tools that are not installed (mypy, hypothesis)
            pass
    for name in list(sys.modules):
        if name == "pydantic" or name.startswith("pydantic.") and not name.startswith("pydantic.v1."):
            del sys.modules[name]
    sys.modules["pydantic"] = api
    import pydantic
    try:
        import pydantic.v1
        raise SystemExit("pydantic.v1 should not import here")
    except ImportError:
        pass
    """
)

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


def _run(bootstrap: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", bootstrap + CHECKS],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SHARED), os.environ.get("PYTHONPATH", "")])},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_settings_and_styles_validate_and_refuse_alike_under_pydantic_one_and_two():
    one, two = _run(AS_ON_A1111), _run("")
    assert one["version"].startswith("1.") and one["fell_back"]  # headshot took `pydantic` itself
    assert two["version"].startswith("2.") and not two["fell_back"] and two["api"] == "pydantic.v1"
    assert one == {**two, "version": one["version"], "fell_back": True}
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
