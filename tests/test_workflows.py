"""The shipped ComfyUI workflows against the node definitions they use, without ComfyUI.

Our nodes' definitions come from the pack itself; ComfyUI's core nodes from a recording,
tests/comfy_core_nodes.json, taken from a ComfyUI checkout's own INPUT_TYPES / RETURN_TYPES
(its commit is in the file). Re-record it with

    python tests/test_workflows.py --record COMFYUI_PATH [COMFYUI_PYTHON]

(COMFYUI_COMMIT names the commit when the checkout has no .git) and, with COMFYUI_PATH (and
COMFYUI_PYTHON, ComfyUI's interpreter) set, the last test compares the recording with that
checkout. Each workflow (ComfyUI's UI format) is checked as ComfyUI's frontend loads it and its
backend validates the queued prompt: every node type exists, every
input name is declared with its type, widget values have the count the frontend expects (a
seed's extra control value included), static combo values are among the options, numbers are in
range, every link joins an output to an input of the same type, and every required input is
either linked or a widget. The checker, and the UI-to-API conversion the frontend does on Queue,
are in workflow_checker.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_checker import (
    RECORDING,
    ROOT,
    WORKFLOW_DIR,
    all_specs,
    core_specs,
    pack_specs,
    spec_from,
    to_api,
    validate,
)

# ---------------------------------------------------------------------------------------------
# the tests


WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_recording_names_the_comfyui_commit_it_came_from():
    data = json.loads(RECORDING.read_text())
    assert len(data["comfyui"]["commit"]) == 40 and data["comfyui"]["repository"] == "Comfy-Org/ComfyUI"
    assert data["nodes"]["KSampler"]["return_types"] == ["LATENT"]


def test_three_workflows_ship_in_the_one_template_folder():
    """ComfyUI serves a pack's templates from any of example_workflows/, workflows/ (and a few more):
    one folder only, or every template is listed twice."""
    assert {p.stem for p in WORKFLOWS} >= {"selfies_to_lora", "headshots_from_lora", "group_photo_two_people"}
    assert not any((ROOT / name).exists() for name in ("example_workflows", "example", "examples", "workflow"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_validates_against_core_and_pack_definitions(path):
    problems = validate(_load(path), all_specs())
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_core_node_a_workflow_uses_is_recorded_and_pack_names_do_not_clash(path):
    core, pack = core_specs(), pack_specs()
    assert not core.keys() & pack.keys()
    used = {node["type"] for node in _load(path)["nodes"]}
    assert used <= core.keys() | pack.keys(), used - core.keys() - pack.keys()
    assert used & pack.keys(), "a shipped workflow should use this pack's nodes"


def test_the_workflows_use_every_node_of_the_pack():
    used = {node["type"] for path in WORKFLOWS for node in _load(path)["nodes"]}
    assert set(pack_specs()) - {"HeadshotEvaluateLikeness", "HeadshotPoseSkeleton"} <= used


def test_the_api_conversion_fills_every_required_input():
    specs = all_specs()
    for path in WORKFLOWS:
        for node_id, node in to_api(_load(path), specs).items():
            spec = specs[node["class_type"]]
            missing = [i.name for i in spec.inputs.values() if i.required and i.name not in node["inputs"]]
            assert not missing, f"{path.name} node {node_id}: {missing}"


def test_the_checker_finds_broken_workflows():
    """Each kind of mistake is caught: otherwise a green run would prove nothing."""
    specs = all_specs()
    original = _load(WORKFLOW_DIR / "headshots_from_lora.json")

    def broken(change) -> list[str]:
        workflow = json.loads(json.dumps(original))
        change(workflow)
        return validate(workflow, specs)

    def node(workflow, kind):
        return next(n for n in workflow["nodes"] if n["type"] == kind)

    def retarget_model_link(w):  # a MODEL output wired into a CONDITIONING input
        sampler = node(w, "KSampler")
        positive = next(i for i in sampler["inputs"] if i["name"] == "positive")
        model = next(i for i in sampler["inputs"] if i["name"] == "model")
        link = next(lk for lk in w["links"] if lk[0] == model["link"])
        old = next(lk for lk in w["links"] if lk[0] == positive["link"])
        w["links"].remove(old)
        positive["link"] = link[0]
        link[3], link[4] = sampler["id"], sampler["inputs"].index(positive)

    assert any("types differ" in p for p in broken(retarget_model_link))
    assert any("widget values" in p for p in broken(lambda w: node(w, "KSampler")["widgets_values"].pop(1)))
    assert any("no such node type" in p for p in broken(lambda w: node(w, "VAEDecode").update(type="VAEDecodeX")))
    assert any(
        "not one of its options" in p
        for p in broken(lambda w: node(w, "HeadshotStyleTemplate")["widgets_values"].__setitem__(0, "nope"))
    )
    assert any("is not connected" in p for p in broken(lambda w: node(w, "VAEDecode").update(inputs=[])))


# ---------------------------------------------------------------------------------------------
# recording ComfyUI's core node definitions (and checking the recording against a checkout)

RECORDED_NODES = [
    "CheckpointLoaderSimple",
    "LoraLoader",
    "CLIPTextEncode",
    "ControlNetLoader",
    "ControlNetApplyAdvanced",
    "EmptyLatentImage",
    "KSampler",
    "VAEDecode",
    "SaveImage",
    "PreviewImage",
    "PreviewAny",
    "LoadImage",
    "CLIPVisionLoader",
]

_RECORDER = r"""
import asyncio, json, os, sys
sys.argv = ["main.py", "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options
comfy.options.enable_args_parsing()
import folder_paths, nodes
asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
def plain(value):
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value
lists = {key: folder_paths.get_filename_list(key) for key in folder_paths.folder_names_and_paths}
out = {}
for name in json.loads(sys.stdin.read()):
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    types = cls.INPUT_TYPES()
    types.pop("hidden", None)
    files = [n for c in ("required", "optional") for n, d in (types.get(c) or {}).items()
             if isinstance(d[0], (list, tuple)) and (any(list(d[0]) == v for k, v in lists.items()
                                                         if k != "custom_nodes")
                                                     or len(d) > 1 and d[1].get("image_upload"))]
    module = cls.__module__
    if os.sep in module:  # comfy_extras modules are loaded by file path
        module = "comfy_extras." + os.path.basename(module)
    out[name] = {"module": module, "category": getattr(cls, "CATEGORY", None),
                 "output_node": bool(getattr(cls, "OUTPUT_NODE", False)), "input_types": plain(types),
                 "return_types": plain(list(cls.RETURN_TYPES)),
                 "return_names": plain(list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)),
                 "file_lists": files}
print("RECORDED " + json.dumps(out))
"""


def record(comfyui_path: str, python: str = sys.executable) -> dict:
    """Core node definitions from the ComfyUI checkout at `comfyui_path`, imported as a library (CPU)."""
    run = subprocess.run(
        [python, "-c", _RECORDER],
        cwd=comfyui_path,
        input=json.dumps(RECORDED_NODES),
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next((out for out in run.stdout.splitlines() if out.startswith("RECORDED ")), None)
    if line is None:
        raise RuntimeError(f"recording failed:\n{run.stderr[-4000:]}")
    commit = (
        os.environ.get("COMFYUI_COMMIT")
        or subprocess.run(  # a checkout extracted without .git names it
            ["git", "rev-parse", "HEAD"], cwd=comfyui_path, capture_output=True, text=True
        ).stdout.strip()
    )
    return {"nodes": json.loads(line[len("RECORDED ") :]), "commit": commit}


@pytest.mark.skipif(
    not os.environ.get("COMFYUI_PATH"),
    reason="set COMFYUI_PATH (and COMFYUI_PYTHON) to compare the recording with a ComfyUI checkout",
)
def test_the_recording_matches_the_comfyui_checkout():
    live = record(os.environ["COMFYUI_PATH"], os.environ.get("COMFYUI_PYTHON", sys.executable))["nodes"]
    recorded = json.loads(RECORDING.read_text())["nodes"]
    for name in RECORDED_NODES:
        a = spec_from(live[name]["input_types"], live[name]["return_types"], file_lists=set(live[name]["file_lists"]))
        b = spec_from(
            recorded[name]["input_types"], recorded[name]["return_types"], file_lists=set(recorded[name]["file_lists"])
        )
        assert a == b, name


if __name__ == "__main__":  # python tests/test_workflows.py --record COMFYUI_PATH [COMFYUI_PYTHON]
    if len(sys.argv) < 3 or sys.argv[1] != "--record":
        sys.exit(__doc__)
    result = record(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else sys.executable)
    version = {}
    exec((Path(sys.argv[2]) / "comfyui_version.py").read_text(), version)
    RECORDING.write_text(
        json.dumps(
            {
                "comfyui": {
                    "repository": "Comfy-Org/ComfyUI",
                    "commit": result["commit"] or "unknown",
                    "version": version.get("__version__"),
                    "recorded_with": "python tests/test_workflows.py --record COMFYUI_PATH [COMFYUI_PYTHON]",
                    "note": "each node's INPUT_TYPES() (hidden inputs left out), RETURN_TYPES and RETURN_NAMES as "
                    "that ComfyUI declares them; file_lists names the combo inputs listing model files",
                },
                "nodes": result["nodes"],
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {RECORDING} ({len(result['nodes'])} nodes, ComfyUI {result['commit']})")
