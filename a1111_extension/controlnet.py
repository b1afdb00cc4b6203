"""OpenPose control through the WebUI's ControlNet: the sd-webui-controlnet extension's `external_code`
on AUTOMATIC1111 (its folder name varies), Forge's built-in `lib_controlnet.external_code`.

Our pose skeleton is already drawn (headshot.generate.pose_render), so the unit's preprocessor is
none and its image is the skeleton. The unit goes to the ControlNet script alone: a script runner
holding only that script, with only its arguments, so no other extension's defaults are needed.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from headshot.errors import HeadshotError

from . import host

MISSING = "install sd-webui-controlnet and an OpenPose model to use poses"
NO_MODEL = "put an OpenPose ControlNet model in models/ControlNet to use poses"
SCRIPT_TITLE = "controlnet"


def _is_external_code(mod) -> bool:
    return mod is not None and hasattr(mod, "ControlNetUnit")


def external_code():
    """The loaded ControlNet external_code module, or None."""
    forge = host.module("lib_controlnet.external_code")
    if _is_external_code(forge):
        return forge
    for name, mod in list(sys.modules.items()):
        if name.endswith("external_code") and _is_external_code(mod):
            return mod
    extensions = host.data_dir() / "extensions"
    for folder in sorted(extensions.iterdir()) if extensions.is_dir() else []:
        if (folder / "scripts" / "external_code.py").is_file():
            try:  # A1111 puts its own folder on sys.path, so extensions.<dir> imports as a namespace package
                mod = importlib.import_module(f"extensions.{folder.name}.scripts.external_code")
            except Exception:
                continue
            if _is_external_code(mod):
                return mod
    return None


def model_names(code=None) -> list[str]:
    """Every ControlNet model name the extension lists (Forge: its global_state; A1111: get_models)."""
    code = code or external_code()
    if code is None:
        return []
    if hasattr(code, "get_models"):
        return [str(m) for m in code.get_models(update=True)]
    state = host.module("lib_controlnet.global_state")
    if state is not None and hasattr(state, "get_all_controlnet_names"):
        if hasattr(state, "update_controlnet_filenames"):
            state.update_controlnet_filenames()
        return [str(m) for m in state.get_all_controlnet_names()]
    return []


def openpose_models(family: str = "sd1", code=None) -> list[str]:
    """OpenPose models, those made for `family` (named ...xl... for SDXL) first."""
    found = [m for m in model_names(code) if "openpose" in m.lower()]
    is_xl = [("xl" in m.lower()) == (family == "sdxl") for m in found]
    return [m for m, fits in zip(found, is_xl) if fits] + [m for m, fits in zip(found, is_xl) if not fits]


def availability(family: str = "sd1") -> tuple[bool, str]:
    """(True, the model it will use) or (False, what to install)."""
    code = external_code()
    if code is None:
        return False, MISSING
    models = openpose_models(family, code)
    if not models:
        return False, NO_MODEL
    return True, f"pose through ControlNet model {models[0]}"


def _script(is_img2img: bool = False):
    scripts = host.module("modules.scripts")
    runner = getattr(scripts, "scripts_img2img" if is_img2img else "scripts_txt2img", None) if scripts else None
    for script in getattr(runner, "alwayson_scripts", []) if runner is not None else []:
        try:
            if str(script.title()).strip().lower() == SCRIPT_TITLE:
                return script
        except Exception:
            continue
    return None


@dataclass
class OpenPoseUnit:
    """Attaches one OpenPose unit with our skeleton to a processing object (WebUISampler.control_unit)."""

    code: object
    model: str

    @classmethod
    def find(cls, family: str = "sd1", model: str | None = None) -> OpenPoseUnit | None:
        code = external_code()
        models = openpose_models(family, code) if code is not None else []
        if code is None or not models or _script() is None:
            return None
        return cls(code, model if model in models else models[0])

    def unit(self, skeleton, strength: float):
        import numpy as np

        none = "None" if "lib_controlnet" in getattr(self.code, "__name__", "") else "none"
        return self.code.ControlNetUnit(  # type: ignore[attr-defined]
            enabled=True,
            module=none,  # the skeleton is drawn already: no preprocessor
            model=self.model,
            weight=float(strength),
            image=np.asarray(skeleton.convert("RGB"), dtype=np.uint8),
            pixel_perfect=True,
        )

    def attach(self, p, skeleton, strength: float = 1.0) -> None:
        attach_units(p, self.code, [self.unit(skeleton, strength)])


def attach_units(p, code, units: list, is_img2img: bool = False) -> None:
    """`units` (pose, FaceID) as the ControlNet script's only arguments on `p`, the other slots disabled."""
    if not units:
        return
    script = _script(is_img2img)
    scripts = host.module("modules.scripts")
    if script is None or scripts is None:
        return
    runner = scripts.ScriptRunner()
    runner.scripts = [script]
    runner.alwayson_scripts = [script]
    args: list = [None] * max(int(script.args_to), 1)
    args[0] = 0  # no selectable script
    slots = int(script.args_to) - int(script.args_from)
    if len(units) > slots:
        raise HeadshotError(
            f"pose and one photo need {len(units)} ControlNet units and the WebUI has {slots}: raise Settings → "
            "ControlNet → Multi-ControlNet: ControlNet unit number, then reload the UI",
            "host_feature_missing",
        )
    units = units + [code.ControlNetUnit(enabled=False) for _ in range(slots - len(units))]
    args[script.args_from : script.args_to] = units
    p.scripts = runner
    p.script_args = args
