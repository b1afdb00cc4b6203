"""STAND-INS for ComfyUI's host modules: what the ComfyUI node tests (test_comfy_*.py) share.

ComfyUI itself is not installed here. Where a node calls ComfyUI's own modules (folder_paths,
comfy.model_management, comfy.utils, comfy.sample, comfy.samplers, server), the `comfy_host`
fixture below (and, for comfy.sample and server, the tests that need them) put STAND-INS FOR
THOSE HOST MODULES in sys.modules: the few functions the nodes call, with ComfyUI's signatures
and behaviour (folder registration, file lists, the interrupt flag, the progress bar). Nothing of
our own logic is replaced: the nodes run the real core (dlib faces, prepare, training on a tiny
random SD1 model, ranking, restoration with a random GFPGAN). Importing this module puts the
repository root on sys.path, so that `comfy_nodes` imports as ComfyUI sees it (a folder of the
pack); `_check_outputs` checks a node's outputs against its RETURN_TYPES.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `comfy_nodes` as ComfyUI sees it: a folder of the pack

from comfy_nodes import host  # noqa: E402

RECORDED = json.loads((Path(__file__).with_name("comfy_core_nodes.json")).read_text())["nodes"]
KSAMPLER_INPUTS = RECORDED["KSampler"]["input_types"]["required"]
PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


# ---------------------------------------------------------------------------------------------
# STAND-INS for ComfyUI's host modules


class InterruptProcessingException(Exception):
    """Stand-in for comfy.model_management.InterruptProcessingException."""


def _folder_paths_standin(base: Path) -> types.ModuleType:
    """STAND-IN for ComfyUI's folder_paths: the registry dict and the functions the nodes call."""
    fp = types.ModuleType("folder_paths")
    fp.supported_pt_extensions = set(PT_EXTENSIONS)
    fp.models_dir = str(base / "models")
    fp.folder_names_and_paths = {
        key: ([str(base / "models" / key)], set(PT_EXTENSIONS)) for key in ("checkpoints", "loras", "controlnet", "vae")
    }
    fp.filename_list_cache = {}
    for sub in ("output", "temp", "input", "models/checkpoints", "models/loras", "models/vae"):
        (base / sub).mkdir(parents=True, exist_ok=True)

    def add_model_folder_path(name, path, is_default=False):  # ComfyUI's semantics
        if name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[name][0]
            if path not in paths:
                paths.insert(0, path) if is_default else paths.append(path)
        else:
            fp.folder_names_and_paths[name] = ([path], set())

    def get_filename_list(name):
        paths, extensions = fp.folder_names_and_paths[name]
        found = set()
        for folder in map(Path, paths):
            if folder.is_dir():
                found |= {
                    p.relative_to(folder).as_posix()
                    for p in folder.rglob("*")
                    if p.is_file() and (not extensions or p.suffix.lower() in extensions)
                }
        return sorted(found)

    def get_full_path_or_raise(name, filename):
        for folder in fp.folder_names_and_paths[name][0]:
            if (Path(folder) / filename).is_file():
                return str(Path(folder) / filename)
        raise FileNotFoundError(f"Model in folder '{name}' with filename '{filename}' not found.")

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_filename_list = get_filename_list
    fp.get_full_path_or_raise = get_full_path_or_raise
    fp.get_output_directory = lambda: str(base / "output")
    fp.get_temp_directory = lambda: str(base / "temp")
    fp.get_input_directory = lambda: str(base / "input")
    return fp


class Host(types.SimpleNamespace):
    """The stand-in host modules of one test, and what the nodes did with them."""


@pytest.fixture
def comfy_host(tmp_path, monkeypatch):
    """STAND-INS for folder_paths, comfy.model_management, comfy.utils and comfy.samplers in sys.modules."""
    calls = []
    state = {"interrupt": False, "interrupt_after_updates": None}
    fp = _folder_paths_standin(tmp_path / "comfyui")

    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.processing_interrupted = lambda: state["interrupt"]

    def throw_exception_if_processing_interrupted():
        if state["interrupt"]:
            state["interrupt"] = False
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.unload_all_models = lambda: calls.append("unload_all_models")
    mm.soft_empty_cache = lambda force=False: calls.append("soft_empty_cache")
    mm.get_torch_device = lambda: torch.device("cpu")

    utils = types.ModuleType("comfy.utils")
    utils.PROGRESS_BAR_ENABLED = True
    updates = []

    class ProgressBar:  # ComfyUI's, with its hook's interrupt check
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            self.total = total or self.total
            self.current = min(value, self.total)
            updates.append((self.current, self.total))
            if state["interrupt_after_updates"] is not None and len(updates) >= state["interrupt_after_updates"]:
                state["interrupt"] = True

    utils.ProgressBar = ProgressBar
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSampler = types.SimpleNamespace(
        SAMPLERS=KSAMPLER_INPUTS["sampler_name"][0], SCHEDULERS=KSAMPLER_INPUTS["scheduler"][0]
    )
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils, comfy.samplers = mm, utils, samplers
    for name, module in {
        "folder_paths": fp,
        "comfy": comfy,
        "comfy.model_management": mm,
        "comfy.utils": utils,
        "comfy.samplers": samplers,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    host.register_folders()
    return Host(
        folder_paths=fp, calls=calls, state=state, updates=updates, base=tmp_path / "comfyui", model_management=mm
    )


# ---------------------------------------------------------------------------------------------
# what a node's outputs must look like


def _check_outputs(cls, result):
    assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES)
    for kind, value in zip(cls.RETURN_TYPES, result):
        if kind == "IMAGE":
            assert value.dtype == torch.float32 and value.ndim == 4 and value.shape[-1] == 3
            assert value.numel() == 0 or 0.0 <= float(value.min()) <= float(value.max()) <= 1.0
        elif kind == "STRING":
            assert isinstance(value, str)
        elif kind == "INT":
            assert isinstance(value, int)
        elif kind == "FLOAT":
            assert isinstance(value, float)
        else:  # a combo output (KSampler's sampler or scheduler names)
            assert isinstance(value, str) and (value in kind if isinstance(kind, list) else kind == "COMBO")
