"""The tab trains with the VAE the WebUI draws the checkpoint with (A1111's SD VAE choice, Forge's VAE module).

The WebUI's own VAE resolution (modules.sd_vae.resolve_vae) and Forge's module list are stand-ins here (the WebUI
does not run in tests); what the glue does with their answer runs for real, and the real A1111 1.10.1 and Forge are
checked with shared/hosts/. A tiny random SD1 single file of the real architecture, saved without its VAE, stands in
for a merged checkpoint shipped without one."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import tiny_models
from tiny_single_files import save_single_file, save_without_vae

from headshot.errors import HeadshotError
from tests.test_a1111_glue import webui  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("a1111_vae")
    whole = save_single_file(tiny_models.make_tiny_sd1(root / "diffusers"), root / "whole.safetensors", "sd1")
    bare = save_without_vae(whole, root / "bare.safetensors", root / "vae.safetensors")
    return SimpleNamespace(whole=whole, bare=bare, vae=root / "vae.safetensors")


def _model_file(checkpoints, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoints.vae, path)
    return path


@pytest.fixture
def dataset(webui):  # noqa: F811
    root = webui.data / "outputs" / "headshot" / "datasets" / "zoe"
    subset = root / "img" / "10_ohwx woman"
    subset.mkdir(parents=True)
    (subset / "00.txt").write_text("ohwx woman")
    (root / "report.json").write_text(json.dumps({"trigger": "ohwx", "class": "woman", "photos": []}))
    return root


def _sd_vae(monkeypatch, resolve=None, vae_dict=None) -> None:
    module = types.ModuleType("modules.sd_vae")
    module.resolve_vae = resolve or (lambda checkpoint: SimpleNamespace(vae=None, source=None, resolved=False))
    module.vae_dict = vae_dict or {}
    monkeypatch.setitem(sys.modules, "modules.sd_vae", module)


def _settings(dataset: Path, checkpoint: Path):
    from a1111_extension import training

    return training.build_settings(dataset, checkpoint, training.choices("zoe", "fast"))


def test_a1111_trains_with_the_vae_it_resolves_for_the_checkpoint(webui, dataset, checkpoints, monkeypatch):  # noqa: F811
    vae = _model_file(checkpoints, webui.data / "models" / "VAE" / "bare.vae.safetensors")
    asked: list = []

    def resolve(checkpoint):
        asked.append(checkpoint)
        return SimpleNamespace(vae=str(vae), source="found near the checkpoint", resolved=True)

    _sd_vae(monkeypatch)
    own = _settings(dataset, checkpoints.whole)
    _sd_vae(monkeypatch, resolve)
    chosen = _settings(dataset, checkpoints.bare)
    assert own.vae is None and chosen.vae == str(vae) and asked == [str(checkpoints.bare)]
    # another VAE is another job: a finished job trained with the checkpoint's own is not reused
    assert Path(_settings(dataset, checkpoints.whole).out_dir) != Path(own.out_dir)


def test_a_checkpoint_without_a_vae_and_none_chosen_says_where_to_choose_one(webui, dataset, checkpoints, monkeypatch):  # noqa: F811
    _sd_vae(monkeypatch)
    with pytest.raises(HeadshotError) as caught:
        _settings(dataset, checkpoints.bare)
    assert caught.value.code == "checkpoint_without_vae" and "Settings → Stable Diffusion → SD VAE" in str(caught.value)
    monkeypatch.setitem(sys.modules, "modules_forge", types.ModuleType("modules_forge"))
    with pytest.raises(HeadshotError) as caught:
        _settings(dataset, checkpoints.bare)
    assert "VAE / Text Encoder" in str(caught.value)


def test_forge_trains_with_the_vae_among_its_chosen_modules(webui, dataset, checkpoints, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "modules_forge", types.ModuleType("modules_forge"))
    _sd_vae(monkeypatch, resolve=lambda checkpoint: pytest.fail("Forge loads its VAE from the module list"))
    text_encoder = _model_file(checkpoints, webui.data / "models" / "text_encoder" / "clip_l.safetensors")
    vae = _model_file(checkpoints, webui.data / "models" / "VAE" / "sd15_vae.safetensors")
    webui.shared.opts.forge_additional_modules = [str(text_encoder)]
    with pytest.raises(HeadshotError):  # a text encoder is no VAE: the checkpoint still has none
        _settings(dataset, checkpoints.bare)
    webui.shared.opts.forge_additional_modules = [str(text_encoder), str(vae)]
    assert _settings(dataset, checkpoints.bare).vae == str(vae.resolve())
