"""Everything the nodes ask of ComfyUI itself: folders, progress, interrupts, memory, samplers.

Host modules (folder_paths, comfy.*) are looked up when a function runs, never at import, so
the pack imports (and its tests run) without ComfyUI; each function says what it does then.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

#: folders this pack adds to ComfyUI's folder_paths: key -> (folder under models/, whether only
#: model files are listed). "headshot_jobs" (datasets and training jobs) goes under output/.
MODEL_FOLDERS = {
    "facerestore_models": ("facerestore_models", True),  # shared with ReActor and facerestore_cf
    "insightface": ("insightface", False),  # buffalo_l: <dir>/models/buffalo_l/*.onnx
    "taggers": ("taggers", False),  # WD14 / DeepDanbooru ONNX folders (model.onnx + tags)
    "headshot_styles": ("headshot_styles", False),  # a person's own style .toml files
    "ipadapter": ("ipadapter", True),  # IP-Adapter FaceID files, shared with ComfyUI_IPAdapter_plus
}
JOBS_KEY = "headshot_jobs"


def module(name: str):
    """The host module `name` when ComfyUI has loaded it, else None.

    Only modules already loaded count: ComfyUI loads folder_paths, comfy.sample, comfy.samplers,
    comfy.utils, comfy.model_management and comfy.sd before any custom node, while importing
    them anywhere else could touch the GPU at import (comfy.model_management does).
    """
    return sys.modules.get(name)


def folder_paths():
    return module("folder_paths")


# --- folders ----------------------------------------------------------------------------------


def register_folders() -> list[str]:
    """Add our folders to folder_paths without overriding a person's extra_model_paths.yaml.

    A key already present (from the yaml or another pack) keeps its paths first and its file
    filter; our default folder is only appended. Returns the keys touched; [] outside ComfyUI.
    """
    fp = folder_paths()
    if fp is None:
        return []
    wanted = {key: (os.path.join(fp.models_dir, sub), only_models) for key, (sub, only_models) in MODEL_FOLDERS.items()}
    wanted[JOBS_KEY] = (os.path.join(fp.get_output_directory(), "headshot_jobs"), False)
    for key, (default, only_models) in wanted.items():
        if key in fp.folder_names_and_paths:
            fp.add_model_folder_path(key, default)  # appended after the person's own paths
        else:
            extensions = set(fp.supported_pt_extensions) if only_models else set()
            fp.folder_names_and_paths[key] = ([default], extensions)
    return list(wanted)


def folder_dirs(key: str) -> list[Path]:
    """The folders registered under `key` (a person's first); [] when unknown or outside ComfyUI."""
    fp = folder_paths()
    if fp is None or key not in fp.folder_names_and_paths:
        return []
    return [Path(p) for p in fp.get_folder_paths(key)]


def file_list(key: str) -> list[str]:
    """ComfyUI's list of files under `key` (what its own loaders show); [] outside ComfyUI."""
    fp = folder_paths()
    if fp is None or key not in fp.folder_names_and_paths:
        return []
    return list(fp.get_filename_list(key))


def full_path(key: str, name: str) -> Path:
    fp = folder_paths()
    if fp is None:
        raise FileNotFoundError(f"{name}: ComfyUI's folder_paths is not available to find it in '{key}'")
    return Path(fp.get_full_path_or_raise(key, name))


def forget_file_list(key: str) -> None:
    """Drop ComfyUI's cached listing of `key` so a file written just now is listed at once."""
    fp = folder_paths()
    cache = getattr(fp, "filename_list_cache", None) if fp is not None else None
    if isinstance(cache, dict):
        cache.pop(key, None)


def jobs_root() -> Path:
    """Where datasets and training jobs go: the first 'headshot_jobs' folder."""
    dirs = folder_dirs(JOBS_KEY)
    root = dirs[0] if dirs else Path(tempfile.gettempdir()) / "headshot_jobs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def temp_dir() -> Path:
    fp = folder_paths()
    return Path(fp.get_temp_directory()) if fp is not None else Path(tempfile.gettempdir())


def input_dir() -> Path | None:
    fp = folder_paths()
    return Path(fp.get_input_directory()) if fp is not None else None


def comfy_tokenizer_dirs() -> list[Path]:
    """ComfyUI's own CLIP-L tokenizer folder (comfy/sd1_tokenizer), found without importing comfy."""
    try:
        spec = importlib.util.find_spec("comfy")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "sd1_tokenizer"
    return [folder] if folder.is_dir() else []


# --- progress, interrupts, memory ----------------------------------------------------------------


class Progress:
    """ComfyUI's progress bar for the running node (nothing outside ComfyUI)."""

    def __init__(self, total: int = 100):
        utils = module("comfy.utils")
        self.bar = utils.ProgressBar(max(1, int(total))) if utils is not None else None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if self.bar is not None:
            self.bar.update_absolute(int(done), max(1, int(total)))


def interrupted() -> bool:
    """True when the person pressed Cancel in ComfyUI (the flag stays set until raised)."""
    mm = module("comfy.model_management")
    return bool(mm is not None and mm.processing_interrupted())


def raise_if_interrupted() -> None:
    """ComfyUI's own interrupt exception when Cancel was pressed (it also clears the flag)."""
    mm = module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def free_models() -> None:
    """Unload every model ComfyUI holds and return the cached GPU memory (before training)."""
    mm = module("comfy.model_management")
    if mm is not None:
        mm.unload_all_models()
        mm.soft_empty_cache()


def torch_device() -> str:
    """ComfyUI's compute device (as a string torch accepts); outside ComfyUI the best available."""
    mm = module("comfy.model_management")
    if mm is not None:
        return str(mm.get_torch_device())
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- samplers --------------------------------------------------------------------------------------


def _fallback_sampler_names() -> tuple[list[str], list[str]]:
    from headshot.sampling.schedulers import SAMPLERS

    samplers = sorted({spec.comfy_sampler for spec in SAMPLERS.values()})
    schedulers = sorted({spec.comfy_scheduler for spec in SAMPLERS.values()})
    return samplers, schedulers


def sampler_names() -> tuple[list[str], list[str]]:
    """KSampler's (sampler names, scheduler names): ComfyUI's own lists when it is loaded.

    The list objects themselves are returned (not copies): ComfyUI compares a linked output's
    type with an input's combo list by equality, and packs that add samplers extend these lists.
    """
    samplers = sys.modules.get("comfy.samplers")
    if samplers is not None:
        return samplers.KSampler.SAMPLERS, samplers.KSampler.SCHEDULERS
    return _fallback_sampler_names()


def sampler_output_types() -> tuple[object, object]:
    """RETURN_TYPES entries that link into KSampler's sampler_name and scheduler combos.

    Inside ComfyUI these are KSampler's own lists (which is what its validation compares);
    without ComfyUI (tests, the pack imported elsewhere) the frontend's name for them, "COMBO".
    """
    samplers = sys.modules.get("comfy.samplers")
    if samplers is not None:
        return samplers.KSampler.SAMPLERS, samplers.KSampler.SCHEDULERS
    return "COMBO", "COMBO"
