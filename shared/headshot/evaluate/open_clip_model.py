"""CLIP score with an open_clip checkpoint: a .safetensors (or .bin/.pt, read with weights_only) of an open_clip
model, its architecture named by open_clip_config.json beside it (the hub's layout) or by the file name
(`ViT-B-32…`). open_clip_torch is optional (pip install 'headshot-studio[clip]'), imported only here; its
bundled BPE vocabulary is the tokenizer, so nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..errors import HeadshotError
from .clip_model import ClipScorer

CONFIG_NAME = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: the weight files open_clip itself writes and the hub holds, tried first in a folder
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise HeadshotError(
            "an open_clip checkpoint needs open_clip_torch: pip install 'headshot-studio[clip]' (or open_clip_torch), "
            "or give --clip-model a CLIP folder in transformers' format",
            "backend_unavailable",
        ) from None
    return open_clip


def weights_in(folder: Path) -> Path | None:
    """The open_clip weight file of a folder holding open_clip_config.json (None when there is none)."""
    if not (folder / CONFIG_NAME).is_file():
        return None
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    return found[0] if found else None


def arch_from_name(path: Path, names: Sequence[str]) -> str | None:
    """The longest open_clip architecture name found in the file's name (ViT-B-32 in vit-b-32_laion2b.bin)."""
    stem = re.sub(r"[_\s]", "-", path.name.lower())
    matches = [n for n in names if re.search(rf"(?<![a-z0-9]){re.escape(n.lower())}(?![a-z0-9])", stem)]
    return max(matches, key=len) if matches else None


def _model_spec(path: Path) -> tuple[str, Path]:
    """(open_clip model name or local-dir:FOLDER, weight file) for a checkpoint file or folder."""
    open_clip = _open_clip()
    if path.is_dir():
        weights = weights_in(path)
        if weights is None:
            raise HeadshotError(
                f"--clip-model {path}: no {CONFIG_NAME} with a weight file ({', '.join(WEIGHT_SUFFIXES)}) in it, and "
                "no transformers CLIP model; give a CLIP folder or an open_clip checkpoint file",
                "bad_option",
            )
        return f"local-dir:{path}", weights
    if (path.parent / CONFIG_NAME).is_file():
        return f"local-dir:{path.parent}", path
    arch = arch_from_name(path, open_clip.list_models())
    if arch is None:
        raise HeadshotError(
            f"--clip-model {path}: the file's name names no open_clip architecture (e.g. ViT-B-32) and no "
            f"{CONFIG_NAME} lies beside it; rename the file after its architecture (ViT-B-32.safetensors) or put "
            "its open_clip_config.json beside it",
            "bad_option",
        )
    return arch, path


def _state_dict(path: Path) -> dict:
    state: object
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle code
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # an open_clip training checkpoint
    if not isinstance(state, dict):
        raise HeadshotError(f"--clip-model {path} holds no state dict of tensors", "bad_option")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


class OpenClipScorer(ClipScorer):
    """An open_clip model loaded once from a local file; the same cosines as ClipScorer."""

    def __init__(self, checkpoint: str | Path):
        open_clip = _open_clip()
        self.model_dir = Path(checkpoint).expanduser()
        spec, weights = _model_spec(self.model_dir)
        config = open_clip.get_model_config(spec) if not spec.startswith("local-dir:") else None
        text_cfg = (config or {}).get("text_cfg", {})
        if "siglip" in spec.lower() or text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
            raise HeadshotError(
                f"open_clip architecture {spec} takes its text model or tokenizer from the Hugging Face hub, which "
                "is never downloaded here; use a CLIP architecture (ViT-B-32, ViT-L-14, …) or a transformers folder",
                "bad_option",
            )
        try:
            self.model = open_clip.create_model(
                spec, pretrained=None, load_weights=False, pretrained_image=False, pretrained_text=False
            ).eval()
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise HeadshotError(
                f"--clip-model {self.model_dir}: open_clip cannot build {spec} ({exc})", "bad_option"
            ) from None
        try:
            self.model.load_state_dict(_state_dict(weights), strict=True)
        except RuntimeError as exc:  # missing, unexpected or differently shaped tensors
            first = " ".join(str(exc).split("\n\t")[:2])[:300]
            raise HeadshotError(
                f"--clip-model {weights} does not fit open_clip's {spec} ({first}); name the file after its "
                "architecture or put its open_clip_config.json beside it",
                "bad_option",
            ) from None
        self.open_clip_tokenizer = open_clip.get_tokenizer(spec)
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.preprocess = image_transform_v2(PreprocessCfg(**self.model.visual.preprocess_cfg), is_train=False)

    def text_embeddings(self, prompts: Sequence[str]):
        import torch

        with torch.inference_mode():
            features = self.model.encode_text(self.open_clip_tokenizer(list(prompts)))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def image_embeddings(self, pictures: Sequence[Image.Image]):
        import torch

        pixels = torch.stack([self.preprocess(p.convert("RGB")) for p in pictures])
        with torch.inference_mode():
            features = self.model.encode_image(pixels)
        return torch.nn.functional.normalize(features.float(), dim=-1)
