"""The offline guard, the tiny SD1 pair and the prompts the base-model tests share (a helper module).

`offline` sets HF_HUB_OFFLINE=1 and refuses (and records) every socket connect for the module that uses it;
`sd1` is a tiny randomly initialised SD1 (tests/tiny_models.py) as a diffusers folder and as an LDM single
file; `PROMPTS` are awkward prompts for the tokenizers.
"""

from __future__ import annotations

import socket

import pytest
from tiny_models import make_tiny_sd1, save_single_file

PROMPTS = [
    "a photo of ohwx man, 85mm, f/1.8, studio lighting",
    "Portrait of a woman's face -- close-up!! (smiling), 4k HDR",
    "naïve café résumé über",
    "  multiple   spaces\tand\nnewlines  ",
    "don't we'll they're I'M",
    "a " * 100,  # longer than 77 tokens: truncated the same way
]


@pytest.fixture(scope="module")
def offline():
    """HF_HUB_OFFLINE=1 and every socket connect refused and recorded, for the whole module.

    A network attempt fails at once instead of hanging, and the recorded list must stay empty.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network access attempted during an offline test")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket.socket, "connect_ex", refuse)
    mp.setattr(socket, "create_connection", refuse)
    yield attempts
    mp.undo()


def _pair(root, family, build):
    folder = build(root / family)
    return folder, save_single_file(folder, root / f"{family}.safetensors", family)


@pytest.fixture(scope="module")
def sd1(tmp_path_factory, offline):
    """(diffusers folder, LDM single file) of the tiny SD1."""
    return _pair(tmp_path_factory.mktemp("sd1"), "sd1", make_tiny_sd1)
