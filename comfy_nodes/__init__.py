"""ComfyUI glue for Headshot Studio. Nodes are thin adapters over the `headshot` core.

Importing this package never fails: each node module is imported on its own, and a module that
cannot be imported (or misses an optional dependency) only drops its own nodes, with one line
saying why. Folders are registered with folder_paths and the job routes added to ComfyUI's
server only when those exist (inside ComfyUI).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

#: module -> ({class name: display name}, [(module it needs, what to pip install)])
NODES = {
    "photos": ({"HeadshotLoadPhotos": "Load Photos"}, []),
    "dataset": ({"HeadshotPrepareDataset": "Prepare Dataset"}, []),
    "training": (
        {"HeadshotTrainLora": "Train Identity LoRA"},
        [
            ("diffusers", "diffusers"),
            ("peft", "peft"),
            ("transformers", "transformers"),
            ("safetensors", "safetensors"),
        ],
    ),
    "generate": ({"HeadshotStyleTemplate": "Style Template", "HeadshotPoseSkeleton": "Pose Skeleton"}, []),
    "detailer": ({"HeadshotFaceDetailer": "Face Detailer"}, []),
    "restore": ({"HeadshotFaceRestore": "Face Restore"}, [("spandrel", "spandrel")]),
    "identity_adapter": (
        {"HeadshotApplyIdentityAdapter": "Apply Identity Adapter (one photo)"},
        [("diffusers", "diffusers"), ("safetensors", "safetensors")],
    ),
    "ranking": ({"HeadshotRankByLikeness": "Rank by Likeness", "HeadshotEvaluateLikeness": "Evaluate Likeness"}, []),
}

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
#: display names of the nodes left out, with the reason (also printed once at start-up)
DISABLED: dict[str, str] = {}


def _say(message: str) -> None:
    print(f"[Headshot Studio] {message}")


def _missing(requirements) -> list[str]:
    missing = []
    for module, package in requirements:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(package)
    return missing


def _load() -> None:
    for module_name, (nodes, requirements) in NODES.items():
        names = ", ".join(nodes.values())
        try:
            missing = _missing(requirements)
            if missing:
                raise ImportError(f"missing {', '.join(missing)} (pip install {' '.join(missing)})")
            module = importlib.import_module(f".{module_name}", __name__)
            classes = {name: getattr(module, name) for name in nodes}
        except Exception as exc:  # one module's failure drops its nodes, never the pack
            reason = f"{type(exc).__name__}: {exc}"
            for display in nodes.values():
                DISABLED[display] = reason
            _say(f"node(s) {names} disabled: {reason}")
            if not isinstance(exc, ImportError):  # a bug, not a missing package: show where
                logging.error("[Headshot Studio] %s failed to import:", module_name, exc_info=True)
            continue
        NODE_CLASS_MAPPINGS.update(classes)
        NODE_DISPLAY_NAME_MAPPINGS.update(nodes)


def _connect_to_host() -> None:
    try:
        from . import host, routes

        host.register_folders()
        routes.register_routes()
    except Exception as exc:
        _say(f"model folders or job routes not set up: {type(exc).__name__}: {exc}")


_load()
_connect_to_host()
