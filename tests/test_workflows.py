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
either linked or a widget. The UI-to-API conversion below is what the frontend does on Queue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DIR = ROOT / "workflows"
RECORDING = Path(__file__).with_name("comfy_core_nodes.json")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# ---------------------------------------------------------------------------------------------
# node definitions, normalised: core (recorded) and ours (live) go through the same code


@dataclass
class InputSpec:
    name: str
    type: str  # "COMBO" for a list of options
    required: bool
    widget: bool
    values: int = 1  # widget values it takes in widgets_values (2 with a control_after_generate)
    options: list | None = None  # static combo options (None: files or other dynamic lists)
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class NodeSpec:
    inputs: dict[str, InputSpec]
    outputs: list[str]
    output_names: list[str] = field(default_factory=list)

    @property
    def widgets(self) -> list[InputSpec]:
        return [i for i in self.inputs.values() if i.widget]


def _type_name(declared) -> str:
    return "COMBO" if isinstance(declared, (list, tuple)) else str(declared)


def spec_from(input_types: dict, return_types, return_names=None, file_lists: set[str] = frozenset()) -> NodeSpec:
    """A NodeSpec from INPUT_TYPES() and RETURN_TYPES as ComfyUI declares them.

    `file_lists` names the combo inputs whose options are files (not checked)."""
    inputs = {}
    for category in ("required", "optional"):
        for name, declared in (input_types.get(category) or {}).items():
            kind = declared[0]
            extra = declared[1] if len(declared) > 1 and isinstance(declared[1], dict) else {}
            type_name = _type_name(kind)
            widget = type_name in WIDGET_TYPES and not extra.get("forceInput")
            # the frontend's rule: a control widget follows an INT seed (or any input asking for one)
            control = extra.get("control_after_generate")
            if control is None and type_name == "INT" and name in ("seed", "noise_seed"):
                control = True
            values = (2 if control else 1) + (1 if extra.get("image_upload") else 0)
            options = None
            if type_name == "COMBO" and name not in file_lists:
                options = list(kind) if isinstance(kind, (list, tuple)) else list(extra.get("options") or [])
                options = options or None  # an empty list: a folder with no files here
            inputs[name] = InputSpec(
                name, type_name, category == "required", widget, values, options, extra.get("min"), extra.get("max")
            )
    outputs = [_type_name(t) for t in return_types]
    return NodeSpec(inputs, outputs, list(return_names or outputs))


def core_specs() -> dict[str, NodeSpec]:
    data = json.loads(RECORDING.read_text())
    return {
        name: spec_from(
            node["input_types"], node["return_types"], node.get("return_names"), set(node.get("file_lists", []))
        )
        for name, node in data["nodes"].items()
    }


def pack_specs() -> dict[str, NodeSpec]:
    from comfy_nodes import NODE_CLASS_MAPPINGS

    return {
        name: spec_from(
            cls.INPUT_TYPES(),
            cls.RETURN_TYPES,
            getattr(cls, "RETURN_NAMES", None),
            {"ckpt_name", "lora_name", "model_name"},
        )
        for name, cls in NODE_CLASS_MAPPINGS.items()
    }


def all_specs() -> dict[str, NodeSpec]:
    return {**core_specs(), **pack_specs()}


# ---------------------------------------------------------------------------------------------
# checking a UI-format workflow


def _widget_values(node: dict, spec: NodeSpec) -> dict[str, object]:
    """Widget name -> value, reading widgets_values in the frontend's order (control values skipped)."""
    values, position = {}, 0
    for widget in spec.widgets:
        values[widget.name] = node["widgets_values"][position]
        position += widget.values
    return values


def validate(workflow: dict, specs: dict[str, NodeSpec]) -> list[str]:
    problems: list[str] = []
    for key in ("last_node_id", "last_link_id", "nodes", "links"):
        if key not in workflow:
            problems.append(f"the workflow has no '{key}' (not ComfyUI's UI format)")
    if problems:
        return problems
    nodes = {node["id"]: node for node in workflow["nodes"]}
    if len(nodes) != len(workflow["nodes"]):
        problems.append("two nodes share an id")
    if nodes and max(nodes) > workflow["last_node_id"]:
        problems.append(f"last_node_id {workflow['last_node_id']} is below node id {max(nodes)}")
    links = {}
    for link in workflow["links"]:
        if len(link) != 6:
            problems.append(f"link {link}: expected [id, origin, origin_slot, target, target_slot, type]")
            continue
        links[link[0]] = link
    if links and max(links) > workflow["last_link_id"]:
        problems.append(f"last_link_id {workflow['last_link_id']} is below link id {max(links)}")

    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        spec = specs.get(node["type"])
        if spec is None:
            problems.append(f"{where}: no such node type in ComfyUI core (recorded) or this pack")
            continue
        linked = set()
        for slot, entry in enumerate(node.get("inputs") or []):
            declared = spec.inputs.get(entry["name"])
            if declared is None:
                problems.append(f"{where}: input '{entry['name']}' is not declared by the node")
                continue
            if entry["type"] != declared.type and declared.type != "*":
                problems.append(f"{where}: input '{entry['name']}' has type {entry['type']}, declared {declared.type}")
            if declared.widget and entry.get("widget", {}).get("name") != entry["name"]:
                problems.append(f'{where}: widget input \'{entry["name"]}\' lacks "widget": {{"name": ...}}')
            if entry.get("link") is not None:
                linked.add(entry["name"])
                link = links.get(entry["link"])
                if link is None:
                    problems.append(f"{where}: input '{entry['name']}' names missing link {entry['link']}")
                elif (link[3], link[4]) != (node["id"], slot):
                    problems.append(f"{where}: link {link[0]} does not end at input '{entry['name']}' (slot {slot})")
        for declared in spec.inputs.values():
            if declared.required and not declared.widget and declared.name not in linked:
                problems.append(f"{where}: required input '{declared.name}' is not connected")
        expected = sum(w.values for w in spec.widgets)
        if len(node.get("widgets_values") or []) != expected:
            problems.append(
                f"{where}: {len(node.get('widgets_values') or [])} widget values, the node has "
                f"{expected} ({', '.join(w.name for w in spec.widgets)})"
            )
        else:
            for name, value in _widget_values(node, spec).items():
                declared = spec.inputs[name]
                if declared.options is not None and value not in declared.options:
                    problems.append(f"{where}: '{name}' = {value!r} is not one of its options")
                if declared.type in ("INT", "FLOAT") and not isinstance(value, (int, float)):
                    problems.append(f"{where}: '{name}' = {value!r} is not a number")
                elif declared.type in ("INT", "FLOAT"):
                    if (
                        declared.minimum is not None
                        and value < declared.minimum
                        or declared.maximum is not None
                        and value > declared.maximum
                    ):
                        problems.append(f"{where}: '{name}' = {value} is out of range")
        outputs = node.get("outputs") or []
        if [o["type"] for o in outputs] != spec.outputs:
            problems.append(f"{where}: outputs {[o['type'] for o in outputs]} differ from the node's {spec.outputs}")
        for slot, output in enumerate(outputs):
            for link_id in output.get("links") or []:
                link = links.get(link_id)
                if link is None or (link[1], link[2]) != (node["id"], slot):
                    problems.append(f"{where}: output {slot} lists link {link_id}, which does not start there")

    for link_id, (_, origin, origin_slot, target, target_slot, kind) in links.items():
        source, sink = nodes.get(origin), nodes.get(target)
        if source is None or sink is None:
            problems.append(f"link {link_id}: joins a missing node")
            continue
        source_spec, sink_spec = specs.get(source["type"]), specs.get(sink["type"])
        if source_spec is None or sink_spec is None:
            continue
        if origin_slot >= len(source_spec.outputs) or target_slot >= len(sink.get("inputs") or []):
            problems.append(f"link {link_id}: slot out of range")
            continue
        out_type = source_spec.outputs[origin_slot]
        entry = sink["inputs"][target_slot]
        in_type = sink_spec.inputs[entry["name"]].type if entry["name"] in sink_spec.inputs else None
        if entry.get("link") != link_id:
            problems.append(f"link {link_id}: input '{entry['name']}' of node {target} does not name it")
        if in_type != "*" and out_type != in_type:
            problems.append(
                f"link {link_id}: {source['type']} output {origin_slot} ({out_type}) -> {sink['type']} "
                f"input '{entry['name']}' ({in_type}): types differ"
            )
        if kind != out_type:
            problems.append(f"link {link_id}: recorded type {kind}, the output's type is {out_type}")
    return problems


def to_api(workflow: dict, specs: dict[str, NodeSpec]) -> dict:
    """The API-format prompt ComfyUI's frontend queues for this workflow (POST /prompt {"prompt": ...})."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) != 0:
            continue
        spec = specs[node["type"]]
        inputs = dict(_widget_values(node, spec))
        for entry in node.get("inputs") or []:
            if entry.get("link") is not None:
                link = links[entry["link"]]
                inputs[entry["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


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
