"""The workflow checker of test_workflows: node definitions, a UI-format workflow's validation, and its API form.

Our nodes' definitions come from the pack itself, ComfyUI's core nodes' from the recording
tests/comfy_core_nodes.json; both go through the same normalisation (spec_from). validate() lists
what ComfyUI's frontend and backend would refuse in a UI-format workflow (see test_workflows'
docstring for the checks), and to_api() is the UI-to-API conversion the frontend does on Queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

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
