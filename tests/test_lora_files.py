"""LoRA files on disk: the sd-webui-additional-networks hashes against an independent computation,
atomic writes, and the A1111 sidecar's content."""

from __future__ import annotations

import errno
import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from headshot.errors import HeadshotError
from headshot.train.lora_files import save_lora, write_a1111_sidecar

EMPTY_SHA256_8 = hashlib.sha256(b"").hexdigest()[:8]  # "e3b0c442"


def _tensors(rows: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(rows)
    return {
        "lora_unet_a.lora_down.weight": torch.randn(rows, 256, generator=gen),
        "lora_unet_a.lora_up.weight": torch.randn(256, rows, generator=gen),
        "lora_unet_a.alpha": torch.tensor(4.0),
    }


def _a1111_legacy_hash(path) -> str:
    """A1111's modules/sd_models.py model_hash(): 64 KiB at offset 1 MiB of the file, first 8 hex digits."""
    with open(path, "rb") as file:
        m = hashlib.sha256()
        file.seek(0x100000)
        m.update(file.read(0x10000))
        return m.hexdigest()[0:8]


def _addnet_model_hash(path) -> str:
    """sd-webui-additional-networks' addnet_hash_safetensors: SHA-256 of everything after the header."""
    with open(path, "rb") as b:
        n = int.from_bytes(b.read(8), "little")
        b.seek(n + 8)
        return hashlib.sha256(b.read()).hexdigest()


@pytest.mark.parametrize("rows, big", [(1024, True), (16, False)])
def test_hashes_match_an_independent_computation(tmp_path, rows, big):
    """sd-scripts hashes a file holding only the ss_* metadata (so later edits of other keys keep the hash)."""
    tensors = _tensors(rows)
    meta = {"ss_network_dim": "4", "ss_output_name": "me", "modelspec.title": "me", "headshot.trigger": "ohwx"}
    path = tmp_path / "me.safetensors"
    save_lora(path, tensors, meta)
    with safe_open(str(path), framework="pt") as f:
        written = f.metadata()

    reference = tmp_path / "reference.safetensors"
    save_file(tensors, str(reference), metadata={k: v for k, v in meta.items() if k.startswith("ss_")})
    assert (reference.stat().st_size > 0x110000) is big
    assert written["sshs_model_hash"] == _addnet_model_hash(reference) == _addnet_model_hash(path)
    assert written["sshs_legacy_hash"] == _a1111_legacy_hash(reference)
    if big:
        assert written["sshs_legacy_hash"] != EMPTY_SHA256_8
        # the legacy hash sees the bytes at 1 MiB: change them and it changes
        changed = dict(tensors)
        changed["lora_unet_a.lora_down.weight"] = changed["lora_unet_a.lora_down.weight"].clone()
        changed["lora_unet_a.lora_down.weight"][-1] += 1
        changed["lora_unet_a.lora_up.weight"] = changed["lora_unet_a.lora_up.weight"].clone()
        changed["lora_unet_a.lora_up.weight"][:, -1] += 1
        again = tmp_path / "changed.safetensors"
        save_lora(again, changed, meta)
        with safe_open(str(again), framework="pt") as f:
            assert f.metadata()["sshs_legacy_hash"] != written["sshs_legacy_hash"]
    else:
        # under 1 MiB the reference reads nothing at offset 1 MiB: the hash of no bytes, as in A1111
        assert written["sshs_legacy_hash"] == EMPTY_SHA256_8


def test_a_failed_write_keeps_the_previous_lora(tmp_path, monkeypatch):
    path = tmp_path / "me.safetensors"
    save_lora(path, _tensors(8), {"ss_network_dim": "4"})
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)  # part of a file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(HeadshotError) as info:
        save_lora(path, _tensors(16), {"ss_network_dim": "4"})
    assert info.value.code == "disk_full"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.safetensors"]


def test_sidecar_content(tmp_path):
    lora = tmp_path / "me.safetensors"
    sidecar = write_a1111_sidecar(
        lora,
        activation_text="ohwx woman",
        preferred_weight=0.7,
        sd_version="sdxl",
        description="Headshot Studio identity LoRA",
    )
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    assert data == {
        "description": "Headshot Studio identity LoRA",
        "sd version": "SDXL",
        "activation text": "ohwx woman",
        "preferred weight": 0.7,
        "negative text": "",
        "notes": "",
    }
    # a user's own keys (e.g. a preview set in A1111) survive a rewrite
    sidecar.write_text(json.dumps({**data, "preview": "me.png"}), encoding="utf-8")
    again = json.loads(
        write_a1111_sidecar(lora, activation_text="ohwx woman", preferred_weight=1.0, sd_version="sd1").read_text(
            encoding="utf-8"
        )
    )
    assert again["preview"] == "me.png" and again["sd version"] == "SD1" and again["preferred weight"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.json"]  # no temporary file left
