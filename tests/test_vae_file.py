"""--vae: a separate VAE file in place of the checkpoint's own (kohya's --vae; A1111's models/VAE).

Tiny random SD1 models of the real architecture (tests/tiny_models.py) written as LDM single files: these prove
which weights end up in the VAE and what the trainer does with them, not image quality."""

from __future__ import annotations

import pytest
import tiny_models
import torch
from safetensors.torch import load_file, save_file
from test_input_cache import _run, photos  # noqa: F401  (photos: a fixture)
from test_train import _settings
from tiny_single_files import VAE_PREFIX, save_single_file, save_without_vae

from headshot.errors import HeadshotError
from headshot.train.base_model_loading import load_base_model
from headshot.train.launch import check_inputs
from headshot.train.lora_files import load_lora


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A whole checkpoint, the same without its VAE, its VAE alone (bare LDM keys) and another VAE."""
    root = tmp_path_factory.mktemp("vae_files")
    folder = tiny_models.make_tiny_sd1(root / "diffusers")
    whole = save_single_file(folder, root / "whole.safetensors", "sd1")
    save_without_vae(whole, root / "no_vae.safetensors", root / "vae.safetensors")
    save_without_vae(whole, root / "no_vae.safetensors", root / "other_vae.safetensors", vae_scale=0.5)
    other = load_file(str(root / "other_vae.safetensors"))  # the same VAE again with the checkpoint's key prefix
    save_file({VAE_PREFIX + k: v for k, v in other.items()}, str(root / "other_vae_prefixed.safetensors"))
    return {"folder": folder, **{p.stem: p for p in root.glob("*.safetensors")}}


def _vae_state(base) -> dict:
    base.ensure_encoders()
    return base.vae.state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_without_a_vae_is_refused_naming_the_vae_option(files):
    with pytest.raises(HeadshotError) as caught:
        load_base_model(files["no_vae"])
    assert caught.value.code == "checkpoint_without_vae" and "--vae FILE" in str(caught.value)


def test_a_checkpoint_without_a_vae_loads_with_its_vae_file(files):
    with_file = _vae_state(load_base_model(files["no_vae"], vae_file=files["vae"], defer_encoders=True))
    assert _same(with_file, _vae_state(load_base_model(files["whole"])))


@pytest.mark.parametrize("source", ["whole", "folder"])
@pytest.mark.parametrize("vae", ["other_vae", "other_vae_prefixed"])
def test_the_vae_file_replaces_the_models_own(files, source, vae):
    replaced = _vae_state(load_base_model(files[source], vae_file=files[vae], defer_encoders=True))
    own = _vae_state(load_base_model(files[source]))
    assert not _same(replaced, own)
    halved = {k: v * 0.5 if v.is_floating_point() else v for k, v in own.items()}
    assert all(torch.allclose(replaced[k], halved[k]) for k in own)


def test_a_file_that_is_no_4_channel_ldm_vae_is_refused_saying_what_it_is(files, tmp_path):
    vae = load_file(str(files["vae"]))
    diffusers_layout = {
        "encoder.down_blocks.0.resnets.0.conv1.weight": torch.zeros(1),
        "decoder.conv_out.weight": torch.zeros(1),
    }
    sixteen = dict(vae, **{"decoder.conv_in.weight": torch.zeros(vae["decoder.conv_in.weight"].shape[0], 16, 3, 3)})
    cases = {
        "diffusers.safetensors": (diffusers_layout, "diffusers' layout"),
        "sixteen.safetensors": (sixteen, "16-channel latents"),
        "lora.safetensors": ({"lora_unet_x.lora_down.weight": torch.zeros(4, 4)}, "not a VAE"),
    }
    for name, (tensors, words) in cases.items():
        save_file(tensors, str(tmp_path / name))
        with pytest.raises(HeadshotError) as caught:
            load_base_model(files["no_vae"], vae_file=tmp_path / name)
        assert caught.value.code == "not_a_vae" and words in str(caught.value), name


def test_a_missing_vae_file_is_refused_before_training_starts(files, photos, tmp_path):
    settings = _settings(photos, files["whole"], tmp_path / "out", vae=str(tmp_path / "nope.safetensors"))
    with pytest.raises(HeadshotError) as caught:
        check_inputs(settings)
    assert caught.value.code == "vae_not_found" and "nope.safetensors" in str(caught.value)


def test_a_checkpoint_without_a_vae_and_no_vae_file_is_refused_before_training_starts(files, photos, tmp_path):
    with pytest.raises(HeadshotError) as caught:  # before a worker starts and loads for seconds
        check_inputs(_settings(photos, files["no_vae"], tmp_path / "out"))
    assert caught.value.code == "checkpoint_without_vae" and "--vae FILE" in str(caught.value)
    check_inputs(_settings(photos, files["no_vae"], tmp_path / "out", vae=str(files["vae"])))


def test_training_on_a_checkpoint_without_a_vae_encodes_with_the_file_and_records_it(files, photos, tmp_path):
    cache = str(tmp_path / "cache")

    def train(out: str, vae: str):
        return _run(
            _settings(
                photos,
                files["no_vae"],
                tmp_path / out,
                steps=1,
                checkpoint_every=1,
                cache_dir=cache,
                vae=str(files[vae]),
            )
        )

    first, _ = train("a", "vae")
    _, metadata = load_lora(first.job.path / f"{first.settings.output_name}.safetensors")
    assert metadata["ss_vae_name"] == "vae.safetensors"
    # another VAE: its own latents, while the text embeddings (no VAE in them) come from the cache
    second, messages = train("b", "other_vae")
    assert any(m.startswith("caching latents of 3 images with other_vae.safetensors") for m in messages)
    assert any(m.startswith("text embeddings read from") for m in messages)
    assert not torch.equal(first.latents[0][0], second.latents[0][0])


def test_drawing_from_a_checkpoint_without_a_vae_takes_the_vae_file(files):
    from headshot.families.checkpoint_detection import base_model_family
    from headshot.sampling.diffusers_sampler import DiffusersSampler

    assert base_model_family(str(files["no_vae"])).name == "sd1"  # the LoRA family check before loading
    sampler = DiffusersSampler(str(files["no_vae"]), device="cpu", vae=str(files["other_vae"]))
    expected = _vae_state(load_base_model(files["whole"], vae_file=files["other_vae"]))
    assert _same(sampler.base.vae.state_dict(), expected)
