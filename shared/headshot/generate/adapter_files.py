"""Finding an IP-Adapter FaceID file in the folders hosts keep them in (nothing is downloaded).

`--adapter NAME` is a path, or a name looked up in: each `--adapter-dir`, then ComfyUI's
models/ipadapter under $COMFYUI_PATH, A1111/Forge's models/ControlNet under $A1111_PATH (where
sd-webui-controlnet keeps its IP-Adapters), and the same folders under the current folder. Without a
name, the family's usual FaceID files are tried, Plus v2 first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from ..errors import HeadshotError
from .controlnet_files import host_model_dirs

ADAPTER_SUFFIXES = (".safetensors", ".bin")
HOST_FOLDERS = (("COMFYUI_PATH", "models/ipadapter"), ("A1111_PATH", "models/ControlNet"))
#: the official file names (h94/IP-Adapter-FaceID), best first; Plus needs the CLIP image encoder too
DEFAULT_ADAPTERS = {
    "sd1": ("ip-adapter-faceid-plusv2_sd15", "ip-adapter-faceid_sd15"),
    "sdxl": ("ip-adapter-faceid-plusv2_sdxl", "ip-adapter-faceid_sdxl"),
}


def adapter_dirs(
    extra: Iterable[str | Path] = (), environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> list[Path]:
    return host_model_dirs(HOST_FOLDERS, extra, environ, cwd)


def find_adapter(name_or_path: str | Path | None, dirs: Iterable[str | Path], family: str) -> Path:
    """The FaceID file named (or the family's usual one); not found: a HeadshotError naming the file,
    the folders searched and where each host keeps it."""
    folders = [Path(d) for d in dirs]
    raw = str(name_or_path or "").strip()
    if raw and Path(raw).expanduser().is_file():
        return Path(raw).expanduser()
    stems = [raw] if raw else list(DEFAULT_ADAPTERS.get(family, ()))
    for stem in stems:
        names = [stem] if Path(stem).suffix.lower() in ADAPTER_SUFFIXES else [stem + s for s in ADAPTER_SUFFIXES]
        for folder in folders:
            for name in names:
                if (folder / name).is_file():
                    return folder / name
    wanted = raw or " or ".join(f"{s}.bin" for s in stems) or "an IP-Adapter FaceID file"
    searched = ", ".join(f"{d}{'' if d.is_dir() else ' (does not exist)'}" for d in folders) or "no folders"
    raise HeadshotError(
        f"identity adapter {wanted} not found (searched {searched}). Download it from h94/IP-Adapter-FaceID "
        "(FaceID Plus v2 also needs h94/IP-Adapter's models/image_encoder folder, given with --image-encoder) "
        "and put it in ComfyUI's models/ipadapter or A1111/Forge's models/ControlNet (set COMFYUI_PATH or "
        "A1111_PATH), or give its path with --adapter or a folder with --adapter-dir",
        "adapter_missing",
    )
