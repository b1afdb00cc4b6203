"""CLIP for scoring pictures against their prompts: finding a local model folder and computing cosines.

A model is a folder in transformers' format (what `save_pretrained` writes and the Hugging Face cache
holds) with safetensors weights: a pickled pytorch_model.bin is never loaded. Or an open_clip checkpoint
(open_clip_model.py): a weight file named after its architecture, or beside its open_clip_config.json.
Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

from ..errors import HeadshotError

#: host folders that may hold CLIP model folders: (environment variable of the host's root, subfolder)
HOST_FOLDERS = (
    ("COMFYUI_PATH", "models/clip"),
    ("COMFYUI_PATH", "models/clip_vision"),
    ("A1111_PATH", "models/clip"),
    ("A1111_PATH", "models/CLIP"),
)
# The CLIP-score bands were written for ViT-B/32 cosines (CLIPScore's model); larger models score lower.
PREFERRED_HUB_MODELS = ("openai/clip-vit-base-patch32", "openai/clip-vit-large-patch14")


def is_clip_folder(folder: Path) -> bool:
    """A transformers CLIP model folder with safetensors weights."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "clip" and any(folder.glob("*.safetensors"))


def is_open_clip(path: Path) -> bool:
    """An open_clip checkpoint: a weight file, or a folder with open_clip_config.json and its weights."""
    from .open_clip_model import WEIGHT_SUFFIXES, weights_in

    if path.is_file():
        return path.suffix in WEIGHT_SUFFIXES
    return path.is_dir() and weights_in(path) is not None


def load_clip_scorer(path: str | Path) -> ClipScorer:
    """The scorer for what find_clip_model found: a transformers folder, else an open_clip checkpoint."""
    path = Path(path)
    if is_clip_folder(path):
        return ClipScorer(path)
    from .open_clip_model import OpenClipScorer

    return OpenClipScorer(path)


def _hub_snapshots(cache: Path) -> list[tuple[str, Path]]:
    """(repo id, snapshot folder) of every cached repo whose name mentions clip, the ref `main` first."""
    found = []
    for repo in sorted(cache.glob("models--*")):
        if "clip" not in repo.name.lower():
            continue
        repo_id = repo.name[len("models--") :].replace("--", "/")
        snapshots = repo / "snapshots"
        try:
            main = (repo / "refs" / "main").read_text().strip()
        except OSError:
            main = ""
        candidates = ([snapshots / main] if main else []) + sorted(snapshots.glob("*"), reverse=True)
        found += [(repo_id, s) for s in candidates if s.is_dir()]
    rank = {name: i for i, name in enumerate(PREFERRED_HUB_MODELS)}
    return sorted(found, key=lambda item: rank.get(item[0], len(rank)))


def clip_search_places(extra_dirs: Iterable[str | Path] = ()) -> list[tuple[str, list[Path]]]:
    """(place in words, candidate model folders) in the order they are tried."""
    from ..train.clip_tokenizers import _hf_hub_cache

    places = []
    for folder in map(Path, extra_dirs):
        places.append((str(folder), [folder, *sorted(p for p in folder.glob("*") if p.is_dir())]))
    cache = _hf_hub_cache()
    places.append((f"the Hugging Face cache {cache}", [s for _, s in _hub_snapshots(cache)]))
    for variable, sub in HOST_FOLDERS:
        root = os.environ.get(variable)
        if root:
            folder = Path(root).expanduser() / sub
            places.append((str(folder), [folder, *sorted(p for p in folder.glob("*") if p.is_dir())]))
    return places


def find_clip_model(given: str | Path | None, extra_dirs: Iterable[str | Path] = ()) -> tuple[Path | None, str]:
    """(model folder, where it was found) or (None, every place searched, for the warning).

    A folder given by name must be a CLIP folder: asking for one that is not is an error, not a warning.
    """
    if given is not None:
        folder = Path(given).expanduser()
        if not (is_clip_folder(folder) or is_open_clip(folder)):
            raise HeadshotError(
                f"--clip-model {folder} is not a CLIP model folder (need config.json with model_type 'clip' and "
                "*.safetensors weights, as save_pretrained writes) nor an open_clip checkpoint (a .safetensors/.bin "
                "file, or a folder with open_clip_config.json); give one of those or leave the option out",
                "bad_option",
            )
        return folder, "--clip-model"
    searched = []
    for place, candidates in clip_search_places(extra_dirs):
        for candidate in candidates:
            if is_clip_folder(candidate) or (candidate.is_dir() and is_open_clip(candidate)):
                return candidate, place
        searched.append(place)
    return None, ", ".join(searched)


_WEIGHTED_GROUP = re.compile(r"(?<!\\)\(((?:[^():\\]|\\[()])+):\s*\d+(?:\.\d+)?\s*\)")


def clip_text(prompt: str, triggers: Iterable[str] = ()) -> str:
    """The prompt as plain words for CLIP: weight groups unwrapped, escapes undone, trigger words removed.

    The trigger is a made-up token CLIP has never seen; keeping it would score the picture against noise.
    """
    text = _WEIGHTED_GROUP.sub(r"\1", prompt).replace("\\(", "(").replace("\\)", ")")
    for trigger in triggers:
        if trigger and trigger.strip():
            text = re.sub(rf"(?<!\w){re.escape(trigger.strip())}(?!\w)", " ", text, flags=re.IGNORECASE)
    parts = [" ".join(part.split()) for part in text.split(",")]
    return ", ".join(part for part in parts if part)


class ClipScorer:
    """One CLIP model loaded once; raw cosines of pictures against their prompts, in batches."""

    def __init__(self, model_dir: str | Path):
        from transformers import CLIPImageProcessor, CLIPModel

        from ..train.clip_tokenizers import find_clip_tokenizer

        self.model_dir = Path(model_dir)
        # safetensors only: a pickled pytorch_model.bin in a shared folder could run code
        self.model = CLIPModel.from_pretrained(str(self.model_dir), local_files_only=True, use_safetensors=True).eval()
        self.tokenizer = find_clip_tokenizer([self.model_dir])
        if (self.model_dir / "preprocessor_config.json").is_file():
            self.processor = CLIPImageProcessor.from_pretrained(str(self.model_dir), local_files_only=True)
        else:  # CLIP's own preprocessing at the model's input size
            side = self.model.config.vision_config.image_size
            self.processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})

    def text_embeddings(self, prompts: Sequence[str]):
        import torch

        tokens = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=77, return_tensors="pt"
        )
        with torch.inference_mode():
            features = _features(self.model.get_text_features(input_ids=tokens["input_ids"]))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def image_embeddings(self, pictures: Sequence[Image.Image]):
        import torch

        pixels = self.processor(images=[p.convert("RGB") for p in pictures], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            features = _features(self.model.get_image_features(pixel_values=pixels))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def cosines(self, pictures: Sequence[Image.Image], prompts: Sequence[str], batch_size: int = 16) -> list[float]:
        """Cosine of each picture's image embedding with its own prompt's text embedding (each prompt encoded once)."""
        if len(pictures) != len(prompts):
            raise ValueError("one prompt per picture")
        unique = list(dict.fromkeys(prompts))
        texts = self.text_embeddings(unique) if unique else None
        row = {prompt: i for i, prompt in enumerate(unique)}
        scores: list[float] = []
        for start in range(0, len(pictures), batch_size):
            images = self.image_embeddings(pictures[start : start + batch_size])
            assert texts is not None  # pictures imply prompts
            for image, prompt in zip(images, prompts[start : start + batch_size]):
                scores.append(float(image @ texts[row[prompt]]))
        return scores


def _features(output):
    """The projected embeddings, whether transformers returns a tensor or an output object."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output
