"""Everything the extension asks of the WebUI itself (AUTOMATIC1111 1.10 or Forge): folders, checkpoints,
the loaded model, LoRA listing, progress, the generation lock.

WebUI modules are looked up in sys.modules when a function runs, never imported at import time: the
WebUI has loaded them before any extension, and importing them anywhere else would start a WebUI. So
this package imports (and its tests run) without a WebUI; outside one each function says what it returns.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

JOBS_FOLDER = "headshot"  # under the WebUI's outputs/: datasets, training jobs, photoshoots
LORA_SUBFOLDER = "headshot"  # under models/Lora/


def module(name: str):
    """The WebUI module `name` when the WebUI has loaded it, else None."""
    return sys.modules.get(name)


def shared():
    return module("modules.shared")


def is_forge() -> bool:
    """Forge has its own backend package (and sd_forge_lora instead of extensions-builtin/Lora)."""
    return module("backend") is not None or module("modules_forge") is not None


def running() -> bool:
    return shared() is not None


# --- folders -----------------------------------------------------------------------------------------


def data_dir() -> Path:
    paths = module("modules.paths_internal") or module("modules.paths")
    found = getattr(paths, "data_path", None) if paths is not None else None
    return Path(found) if found else Path(tempfile.gettempdir())


def models_dir() -> Path:
    paths = module("modules.paths_internal") or module("modules.paths")
    found = getattr(paths, "models_path", None) if paths is not None else None
    return Path(found) if found else data_dir() / "models"


def _cmd_opt(name: str):
    sh = shared()
    return getattr(getattr(sh, "cmd_opts", None), name, None) if sh is not None else None


def lora_dir() -> Path:
    """The WebUI's Lora folder (--lora-dir, else models/Lora)."""
    return Path(_cmd_opt("lora_dir") or models_dir() / "Lora")


def outputs_dir() -> Path:
    """Where the WebUI writes pictures (Settings → Paths "output directory", else <data>/outputs)."""
    sh = shared()
    opts = getattr(sh, "opts", None) if sh is not None else None
    outdir = getattr(opts, "outdir_samples", "") if opts is not None else ""
    return Path(outdir).parent if outdir else data_dir() / "outputs"


def txt2img_dir() -> str:
    sh = shared()
    opts = getattr(sh, "opts", None) if sh is not None else None
    return getattr(opts, "outdir_txt2img_samples", "") or str(outputs_dir() / "txt2img-images")


def jobs_root() -> Path:
    root = outputs_dir() / JOBS_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    return root


def restore_model_dirs() -> list[Path]:
    """Where A1111 keeps face-restoration models (spandrel reads GFPGAN / CodeFormer files from them)."""
    base = models_dir()
    dirs = [base / "GFPGAN", base / "Codeformer", base / "facerestore_models"]
    for option in ("gfpgan_models_path", "codeformer_models_path"):
        if _cmd_opt(option):
            dirs.insert(0, Path(_cmd_opt(option)))
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def face_model_dirs() -> list[Path]:
    """insightface's buffalo_l files: models/insightface (as in ComfyUI)."""
    folder = models_dir() / "insightface"
    return [folder] if folder.is_dir() else []


def controlnet_dirs() -> list[Path]:
    base = models_dir()
    return [d for d in (base / "ControlNet", base / "controlnet") if d.is_dir()]


def allowed_roots() -> list[Path]:
    """The folders a request or a typed path may point into: the WebUI's outputs and models folders and its Lora
    folder, plus HEADSHOT_ALLOWED_DIRS (the tab copies uploads into outputs/headshot/photos itself)."""
    from headshot.allowed_paths import allowed_roots as roots

    return roots([outputs_dir(), models_dir(), lora_dir()])


# --- checkpoints and LoRAs -------------------------------------------------------------------------------


def checkpoint_titles() -> list[str]:
    """The WebUI's checkpoint list (the titles its own dropdown shows)."""
    sd_models = module("modules.sd_models")
    if sd_models is None:
        return []
    return sorted(getattr(sd_models, "checkpoints_list", {}), key=str.lower)


def checkpoint_file(title: str) -> Path:
    """The file behind a checkpoint title from checkpoint_titles()."""
    from headshot.errors import HeadshotError

    sd_models = module("modules.sd_models")
    info = getattr(sd_models, "checkpoints_list", {}).get(title) if sd_models is not None else None
    if info is None and sd_models is not None and hasattr(sd_models, "get_closet_checkpoint_match"):
        info = sd_models.get_closet_checkpoint_match(title)
    if info is None:
        raise HeadshotError(
            f"checkpoint {title!r} is not in the WebUI's list; pick one from the dropdown (refresh it after "
            "adding files to models/Stable-diffusion)",
            "base_model_not_found",
        )
    return Path(info.filename)


def current_checkpoint_file() -> Path | None:
    sh = shared()
    model = getattr(sh, "sd_model", None) if sh is not None else None
    info = getattr(model, "sd_checkpoint_info", None)
    if info is not None and getattr(info, "filename", None):
        return Path(info.filename)
    title = getattr(getattr(sh, "opts", None), "sd_model_checkpoint", None) if sh is not None else None
    try:
        return checkpoint_file(title) if title else None
    except Exception:
        return None


def checkpoint_vae(checkpoint: Path) -> Path | None:
    """The VAE file the WebUI draws `checkpoint` with, so training encodes the photos with it too; None: the
    checkpoint's own. A1111: its own choice (--vae-path, the checkpoint's card, a VAE named after the checkpoint,
    Settings → SD VAE); Forge: the VAE among the "VAE / Text Encoder" modules picked at the top."""
    sd_vae, sh = module("modules.sd_vae"), shared()
    if sd_vae is None or sh is None:
        return None
    if is_forge():
        folders = [models_dir() / "VAE"] + ([Path(_cmd_opt("vae_dir"))] if _cmd_opt("vae_dir") else [])
        known = {Path(p).resolve() for p in getattr(sd_vae, "vae_dict", {}).values()}
        for chosen in getattr(getattr(sh, "opts", None), "forge_additional_modules", None) or []:
            path = Path(chosen).resolve()  # a text encoder file is one of these modules too: only VAEs count
            if path in known or any(path.is_relative_to(f.resolve()) for f in folders):
                return path
        return None
    resolve = getattr(sd_vae, "resolve_vae", None)
    found = getattr(resolve(str(checkpoint)), "vae", None) if resolve is not None else None
    return Path(found) if found else None


def model_family() -> str:
    """sd1 / sd2 / sdxl of the loaded model: its own flags, else (Forge before its first picture) from the
    selected checkpoint's weights."""
    sh = shared()
    model = getattr(sh, "sd_model", None) if sh is not None else None
    if getattr(model, "is_sdxl", False) is True:
        return "sdxl"
    if getattr(model, "is_sd2", False) is True:
        return "sd2"
    if getattr(model, "is_sd1", False) is True or hasattr(model, "is_sdxl"):
        return "sd1"
    file = current_checkpoint_file()
    if file is not None and file.is_file():
        from headshot.families import base_model_family

        family = base_model_family(file)
        if family is not None:
            return family.name
    return "sd1"


def lora_files() -> list[Path]:
    """Every LoRA file under the Lora folder, newest first (a LoRA just trained is at the top)."""
    root = lora_dir()
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("*.safetensors") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def refresh_loras() -> bool:
    """Rescan the Lora folder so a new file is an Extra Networks card at once (A1111's extensions-builtin/Lora
    and Forge's sd_forge_lora both name the module `networks`); False when neither is loaded."""
    networks = module("networks")
    if networks is None or not hasattr(networks, "list_available_networks"):
        return False
    networks.list_available_networks()
    return True


# --- the model during training -----------------------------------------------------------------------------


def unload_model() -> None:
    """Move the WebUI's model off the GPU before training (A1111: to the CPU; Forge: all its models unloaded)."""
    sd_models = module("modules.sd_models")
    if sd_models is not None and hasattr(sd_models, "unload_model_weights"):
        sd_models.unload_model_weights()
    memory = module("backend.memory_management")
    if memory is not None and hasattr(memory, "soft_empty_cache"):
        memory.soft_empty_cache()
    devices = module("modules.devices")
    if devices is not None and hasattr(devices, "torch_gc"):
        devices.torch_gc()


def reload_model() -> None:
    """Bring the model back after training (A1111: onto its device, as /sdapi/v1/reload-checkpoint does;
    Forge loads it again at the next picture by itself)."""
    sd_models, sh = module("modules.sd_models"), shared()
    model = getattr(sh, "sd_model", None) if sh is not None else None
    if sd_models is not None and model is not None and hasattr(sd_models, "send_model_to_device"):
        sd_models.send_model_to_device(model)


# --- generation --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def generation_lock(job: str):
    """The WebUI's own queue lock and job state around our pictures: its queue waits for us, its Interrupt
    button and progress bar see us."""
    call_queue = module("modules.call_queue")
    lock = getattr(call_queue, "queue_lock", None) if call_queue is not None else None
    sh = shared()
    state = getattr(sh, "state", None) if sh is not None else None
    with lock if lock is not None else contextlib.nullcontext():
        if state is not None and hasattr(state, "begin"):
            state.begin(job=job)
        try:
            yield state
        finally:
            if state is not None and hasattr(state, "end"):
                state.end()


def sampling_progress() -> tuple[int, int]:
    """(step, steps) of the picture the WebUI is drawing now; (0, 0) when it is idle."""
    sh = shared()
    state = getattr(sh, "state", None) if sh is not None else None
    if state is None:
        return 0, 0
    return int(getattr(state, "sampling_step", 0) or 0), int(getattr(state, "sampling_steps", 0) or 0)


def interrupted() -> bool:
    sh = shared()
    state = getattr(sh, "state", None) if sh is not None else None
    return bool(getattr(state, "interrupted", False))


def temp_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / "headshot_studio"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def environment_note() -> str:
    """One line for the tab's header: which WebUI, and where our files go."""
    kind = "Forge" if is_forge() else "AUTOMATIC1111"
    return (
        f"{kind}; jobs and pictures under {jobs_root()}, LoRAs under {lora_dir() / LORA_SUBFOLDER}"
        + ("" if running() else " (WebUI not loaded)")
        + ("" if os.environ.get("HEADSHOT_ALLOWED_DIRS") is None else "; extra folders from HEADSHOT_ALLOWED_DIRS")
    )
