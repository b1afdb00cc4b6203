"""CLIP tokenizers from local sources only: a given folder, the Hugging Face cache, or the BPE
vocabulary that ships inside open_clip_torch. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import BackendUnavailable
from ..families import Family
from .base_model import CLIP_MAX_LENGTH

OPENAI_CLIP_REPO = "openai/clip-vit-large-patch14"


def family_tokenizers(family: Family, tokenizer_dirs, *, model_folder: Path | None = None) -> list:
    """A tokenizer per text encoder of `family`, its own subfolder of `model_folder` searched first."""
    tokenizers = []
    for encoder in family.text_encoders:
        own = [model_folder / encoder.tokenizer_subfolder] if model_folder is not None else []
        tokenizers.append(find_clip_tokenizer([*own, *tokenizer_dirs], pad_token=encoder.pad_token))
    return tokenizers


def hub_tokenizers(repo_id: str, family: Family, tokenizer_dirs, local_only: bool) -> list:
    from transformers import CLIPTokenizer

    tokenizers = []
    for encoder in family.text_encoders:
        try:
            tokenizer = CLIPTokenizer.from_pretrained(
                repo_id, subfolder=encoder.tokenizer_subfolder, local_files_only=local_only
            )
        except Exception:
            tokenizer = find_clip_tokenizer(tokenizer_dirs, pad_token=encoder.pad_token)
        tokenizers.append(_finish_tokenizer(tokenizer, encoder.pad_token))
    return tokenizers


def _finish_tokenizer(tokenizer, pad_token: str | None):
    # ComfyUI's sd1_tokenizer says model_max_length 8192 (it chunks long prompts itself); the
    # text encoders have 77 positions
    if not tokenizer.model_max_length or tokenizer.model_max_length > CLIP_MAX_LENGTH:
        tokenizer.model_max_length = CLIP_MAX_LENGTH
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    return tokenizer


def _has_tokenizer_files(folder: Path) -> bool:
    return ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) or (
        folder / "tokenizer.json"
    ).is_file()


def _hf_hub_cache() -> Path:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        return Path.home() / ".cache" / "huggingface" / "hub"


def _hf_cached_clip_dir() -> Path | None:
    """The cached snapshot folder of openai/clip-vit-large-patch14's tokenizer, looked up without any network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cache = str(_hf_hub_cache())
    vocab, merges = (
        try_to_load_from_cache(OPENAI_CLIP_REPO, name, cache_dir=cache) for name in ("vocab.json", "merges.txt")
    )
    if isinstance(vocab, str) and isinstance(merges, str) and Path(vocab).parent == Path(merges).parent:
        return Path(vocab).parent
    return None


def _open_clip_bpe_path() -> Path | None:
    """open_clip_torch's copy of CLIP's BPE vocabulary, found without importing open_clip."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


def _load_tokenizer_dir(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def find_clip_tokenizer(tokenizer_dirs: Sequence[Path] = (), *, pad_token: str | None = None):
    """A CLIPTokenizer (model_max_length 77) from local sources only, searched in this order:

    1. each folder in `tokenizer_dirs` holding vocab.json + merges.txt (or tokenizer.json), or a
       tokenizer/ subfolder that does (a diffusers model folder);
    2. the Hugging Face cache's openai/clip-vit-large-patch14 (never downloaded);
    3. the BPE vocabulary inside the open_clip_torch package, turned into vocab.json + merges.txt.

    `pad_token` replaces the source's padding token ("!" for OpenCLIP-based encoders: SD2, SDXL's
    second). Raises BackendUnavailable naming every place searched when none has a tokenizer.
    """
    searched = []
    for folder in map(Path, tokenizer_dirs):
        for candidate in (folder, folder / "tokenizer"):
            if _has_tokenizer_files(candidate):
                try:
                    return _finish_tokenizer(_load_tokenizer_dir(candidate), pad_token)
                except Exception as e:  # a damaged folder: say so and keep looking
                    searched.append(f"{candidate}: has tokenizer files but they do not load ({e})")
                    break
        else:
            searched.append(f"{folder}: no vocab.json + merges.txt" + ("" if folder.is_dir() else " (no such folder)"))
    cached = _hf_cached_clip_dir()
    if cached is not None:
        try:
            return _finish_tokenizer(_load_tokenizer_dir(cached), pad_token)
        except Exception as e:
            searched.append(f"Hugging Face cache {cached}: {OPENAI_CLIP_REPO} is cached but does not load ({e})")
    else:
        searched.append(f"Hugging Face cache {_hf_hub_cache()}: {OPENAI_CLIP_REPO} is not cached")
    bpe = _open_clip_bpe_path()
    if bpe is not None:
        return clip_tokenizer_from_bpe(bpe, pad_token=pad_token)
    searched.append("open_clip_torch's bpe_simple_vocab_16e6.txt.gz: open_clip_torch is not installed")
    raise BackendUnavailable(
        "No CLIP tokenizer was found on this machine (nothing is downloaded). Searched: "
        + "; ".join(f"({i}) {s}" for i, s in enumerate(searched, 1))
        + ". Fix: pip install open_clip_torch (it ships CLIP's BPE vocabulary), or point --tokenizer at a folder "
        "with vocab.json and merges.txt (ComfyUI's comfy/sd1_tokenizer, or a diffusers model's tokenizer/ folder)."
    )


def _byte_characters() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table.

    Bytes that are printable Latin-1 characters stand for themselves; the other 68 (controls,
    space, soft hyphen…) are given the characters from U+0100 upward, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.lru_cache(maxsize=4)
def _clip_vocabulary(bpe_path: str) -> tuple[tuple[tuple[str, str], ...], dict[str, int]]:
    """(merges, vocab) of CLIP's tokenizer from its gzipped BPE merge list (49408 tokens).

    The vocabulary is: the 256 byte characters, the same with the end-of-word mark "</w>", one
    token per merge (48894 merges: the file's first line is a header and CLIP keeps
    49152 - 256 - 2 of them), then <|startoftext|> and <|endoftext|>.
    """
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    count = 49152 - 256 - 2
    pairs = [line.split() for line in lines[1 : 1 + count]]
    if len(pairs) != count or any(len(m) != 2 for m in pairs):
        raise BackendUnavailable(
            f"{bpe_path} is not CLIP's BPE merge list (expected {count} pairs); reinstall "
            "open_clip_torch or point --tokenizer at a CLIP tokenizer folder."
        )
    characters = list(_byte_characters().values())
    merges = tuple((first, second) for first, second in pairs)
    tokens = characters + [c + "</w>" for c in characters] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return merges, {token: i for i, token in enumerate(tokens)}


def clip_tokenizer_from_bpe(bpe_path: str | Path | None = None, *, pad_token: str | None = None):
    """A CLIPTokenizer built from CLIP's BPE merge list (by default the one inside open_clip_torch)."""
    import transformers
    from transformers import CLIPTokenizer

    path = Path(bpe_path) if bpe_path is not None else _open_clip_bpe_path()
    if path is None:
        raise BackendUnavailable(
            "open_clip_torch is not installed, so CLIP's BPE vocabulary is missing; "
            "pip install open_clip_torch, or point --tokenizer at a CLIP tokenizer folder."
        )
    merges, vocab = _clip_vocabulary(str(path))
    if int(transformers.__version__.split(".")[0]) < 5:  # WebUIs pin 4.x: its CLIPTokenizer reads only files
        return _finish_tokenizer(_tokenizer_from_files(CLIPTokenizer, vocab, merges), pad_token)
    # transformers annotates merges as list[str]; its tokenizers BPE takes these (first, second) pairs
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=CLIP_MAX_LENGTH)  # type: ignore[arg-type]
    return _finish_tokenizer(tokenizer, pad_token)


def _tokenizer_from_files(tokenizer_class, vocab: dict[str, int], merges) -> object:
    with tempfile.TemporaryDirectory() as folder:
        vocab_file, merges_file = Path(folder, "vocab.json"), Path(folder, "merges.txt")
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        return tokenizer_class(str(vocab_file), str(merges_file), model_max_length=CLIP_MAX_LENGTH)
