"""Base-model loading: family detection, single-file conversion, diffusers folders, offline use
(tokenizers: test_clip_tokenizers.py).

Every model here is tiny and randomly initialised (tests/tiny_models.py). These tests prove wiring
and file formats: that the same weights come back from a single file and from a diffusers folder and
compute the same outputs, that the single files are in the real LDM/SGM layout, and that nothing
touches the network. They say nothing about image quality.
"""

from __future__ import annotations

import time

import pytest
import torch
from base_model_fixtures import PROMPTS, _pair, offline, sd1  # noqa: F401  (fixtures)
from safetensors.torch import load_file, save_file
from tiny_models import PUBLISHED, full_size_ldm_shapes, make_tiny_sd2, make_tiny_sdxl, save_single_file

from headshot.errors import HeadshotError
from headshot.families import get_family
from headshot.train import single_file_loading
from headshot.train.base_model_loading import detect_family, load_base_model

TRIPPED = []


class Tripwire:
    """Stands for a Lightning callback pickled into a .ckpt: records it if unpickling ever runs its code."""

    def __setstate__(self, state):
        TRIPPED.append(state)


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory, offline):
    """(diffusers folder, SGM single file) of the tiny SDXL."""
    return _pair(tmp_path_factory.mktemp("sdxl"), "sdxl", make_tiny_sdxl)


@pytest.fixture(scope="module")
def sd2(tmp_path_factory, offline):
    """{prediction_type: (folder, LDM single file)} of two tiny SD2s wired to behave as epsilon / v models."""
    root = tmp_path_factory.mktemp("sd2")
    out = {}
    for prediction in ("epsilon", "v_prediction"):
        folder = make_tiny_sd2(root / prediction, prediction_type=prediction)
        out[prediction] = (folder, save_single_file(folder, root / f"{prediction}.safetensors", "sd2"))
    return out


@pytest.fixture(scope="module")
def sd1_loaded(sd1):
    folder, single = sd1
    return load_base_model(folder), load_base_model(single)


@pytest.fixture(scope="module")
def sdxl_loaded(sdxl):
    folder, single = sdxl
    return load_base_model(folder), load_base_model(single)


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if sa[k].shape != sb[k].shape or not torch.equal(sa[k], sb[k])]
    assert not different, f"{type(a).__name__}: {len(different)} tensors differ, e.g. {different[:3]}"


def _unet_inputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    inputs = {
        "sample": torch.randn((2, 4, 16, 16), generator=g),
        "timestep": torch.tensor([10, 700]),
        "encoder_hidden_states": torch.randn((2, 77, cfg.cross_attention_dim), generator=g),
    }
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn((2, pooled), generator=g),
            "time_ids": torch.tensor([[128.0, 128, 0, 0, 128, 128]] * 2),
        }
    return inputs


def _kohya_lora_file(path):
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name in ("lora_unet_down_blocks_0_attentions_0_proj_in", "lora_te_text_model_encoder_layers_0_mlp_fc1"):
        tensors[f"{name}.lora_down.weight"] = torch.randn((4, 32), generator=g)
        tensors[f"{name}.lora_up.weight"] = torch.zeros((32, 4))
        tensors[f"{name}.alpha"] = torch.tensor(4.0)
    save_file(tensors, str(path))
    return path


# ---------------------------------------------------------------------------------------------
# family detection
# ---------------------------------------------------------------------------------------------


def test_detects_sd1_single_file(sd1):
    """An LDM file with cond_stage_model.transformer.* (CLIP ViT-L) is SD1, epsilon."""
    assert detect_family(load_file(str(sd1[1]))) == ("sd1", "epsilon")


def test_detects_sdxl_single_file(sdxl):
    """An SGM file with conditioner.embedders.{0,1} and label_emb is SDXL, epsilon."""
    assert detect_family(load_file(str(sdxl[1]))) == ("sdxl", "epsilon")


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_detects_sd2_prediction_type_from_the_weights(sd2, prediction):
    """Two SD2 key sets with the same keys and shapes: the UNet's behaviour on noise decides eps vs v."""
    state = load_file(str(sd2[prediction][1]))
    assert "cond_stage_model.model.token_embedding.weight" in state
    assert detect_family(state) == ("sd2", prediction)


def test_explicit_prediction_markers_win(sd2, sdxl):
    """ModelSpec metadata and the v_pred marker key override the defaults and the SD2 probe."""
    v_state = load_file(str(sd2["v_prediction"][1]))
    assert detect_family(v_state, metadata={"modelspec.prediction_type": "epsilon"}) == ("sd2", "epsilon")
    xl_state = load_file(str(sdxl[1]))
    xl_state["v_pred"] = torch.tensor([])
    assert detect_family(xl_state) == ("sdxl", "v_prediction")


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("lora", ["LoRA", "lora_unet_", "--lora, not --base-model"]),
        ("vae", ["VAE alone", "full checkpoint"]),
        ("random", ["not a Stable Diffusion checkpoint", "first keys: alpha, beta"]),
    ],
)
def test_files_that_are_not_base_models_are_named(sd1, tmp_path, kind, expected):
    """A LoRA, a lone VAE or unrelated tensors: not_a_base_model, naming the file and what it is instead."""
    path = tmp_path / f"{kind}.safetensors"
    if kind == "lora":
        _kohya_lora_file(path)
    elif kind == "vae":
        state = load_file(str(sd1[1]))
        save_file(
            {k[len("first_stage_model.") :]: v for k, v in state.items() if k.startswith("first_stage_model.")},
            str(path),
        )
    else:
        save_file({"alpha": torch.zeros(3), "beta": torch.ones(2, 2)}, str(path))
    with pytest.raises(HeadshotError) as caught:
        load_base_model(path)
    assert caught.value.code == "not_a_base_model"
    assert str(path) in caught.value.message
    for fragment in expected:
        assert fragment in caught.value.message


def test_unreadable_file_is_explained(tmp_path):
    """Bytes that are neither safetensors nor a torch checkpoint: unreadable_checkpoint, naming the file."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"<html>a download error page, not a model</html>")
    with pytest.raises(HeadshotError) as caught:
        load_base_model(path)
    assert caught.value.code == "unreadable_checkpoint" and str(path) in caught.value.message


# ---------------------------------------------------------------------------------------------
# loading: single file == diffusers folder
# ---------------------------------------------------------------------------------------------


def test_sd1_single_file_equals_diffusers_folder(sd1_loaded, offline):
    """SD1 from the LDM file and from the folder: same weights, identical UNet/text/VAE outputs."""
    from_folder, from_file = sd1_loaded
    assert (
        (from_file.family, from_file.prediction_type)
        == (from_folder.family, from_folder.prediction_type)
        == ("sd1", "epsilon")
    )
    for a, b in zip(
        [from_folder.unet, from_folder.vae, *from_folder.text_encoders],
        [from_file.unet, from_file.vae, *from_file.text_encoders],
    ):
        _same_weights(a, b)
    inputs = _unet_inputs(from_folder.unet)
    with torch.no_grad():
        assert torch.equal(from_folder.unet(**inputs).sample, from_file.unet(**inputs).sample)
        ids = from_file.tokenizers[0](PROMPTS[:2], padding="max_length", max_length=77, return_tensors="pt").input_ids
        assert torch.equal(from_folder.text_encoders[0](ids)[0], from_file.text_encoders[0](ids)[0])
        latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
        assert torch.equal(from_folder.vae.decode(latents).sample, from_file.vae.decode(latents).sample)
    assert from_file.vae.config.scaling_factor == from_folder.vae.config.scaling_factor == 0.18215
    assert offline == []


def test_sdxl_single_file_equals_diffusers_folder(sdxl_loaded, offline):
    """SDXL from the SGM file and from the folder: same weights, identical UNet (text_time) and text outputs."""
    from_folder, from_file = sdxl_loaded
    assert (from_file.family, from_file.prediction_type) == ("sdxl", "epsilon")
    assert from_folder.family == "sdxl"
    assert [type(t).__name__ for t in from_file.text_encoders] == ["CLIPTextModel", "CLIPTextModelWithProjection"]
    for a, b in zip(
        [from_folder.unet, from_folder.vae, *from_folder.text_encoders],
        [from_file.unet, from_file.vae, *from_file.text_encoders],
    ):
        _same_weights(a, b)
    inputs = _unet_inputs(from_folder.unet)
    with torch.no_grad():
        assert torch.equal(from_folder.unet(**inputs).sample, from_file.unet(**inputs).sample)
        ids = from_file.tokenizers[1](PROMPTS[:2], padding="max_length", max_length=77, return_tensors="pt").input_ids
        a, b = from_folder.text_encoders[1](ids), from_file.text_encoders[1](ids)
        assert torch.equal(a.text_embeds, b.text_embeds) and torch.equal(a.last_hidden_state, b.last_hidden_state)
    assert from_file.vae.config.scaling_factor == from_folder.vae.config.scaling_factor == 0.13025
    assert offline == []


def test_sd2_single_file_equals_diffusers_folder(sd2, offline):
    """SD2's OpenCLIP tower: the unused last block is dropped, the rest matches the folder exactly."""
    folder, single = sd2["epsilon"]
    from_folder, from_file = load_base_model(folder), load_base_model(single)
    assert (
        (from_file.family, from_file.prediction_type)
        == (from_folder.family, from_folder.prediction_type)
        == ("sd2", "epsilon")
    )
    for a, b in zip(
        [from_folder.unet, from_folder.vae, *from_folder.text_encoders],
        [from_file.unet, from_file.vae, *from_file.text_encoders],
    ):
        _same_weights(a, b)
    assert from_file.tokenizers[0].pad_token == "!"
    assert offline == []


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_single_files_are_the_real_layout_for_diffusers_own_loader(sd1, sdxl, family, offline):
    """diffusers' from_single_file (configs from the folder, not our converter) reads back every original weight."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    folder, single = {"sd1": sd1, "sdxl": sdxl}[family]
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    reference = cls.from_pretrained(str(folder), local_files_only=True)
    converted = cls.from_single_file(str(single), config=str(folder), local_files_only=True)
    names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if family == "sdxl" else [])
    for name in names:
        _same_weights(getattr(reference, name), getattr(converted, name))
    assert offline == []


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_full_size_shapes_give_the_published_architectures(family):
    """Real-size SD1.5/SD2.1/SDXL key sets (meta tensors, no memory): the shapes alone yield the published
    configs, and diffusers' conversion then fits every tensor of every component exactly."""
    state = full_size_ldm_shapes(family)
    keys = set(state)
    metadata = {"modelspec.prediction_type": "v"} if family == "sd2" else None  # no weights to probe here
    assert detect_family(state, metadata=metadata)[0] == family
    published = PUBLISHED[family]
    unet, weights = single_file_loading.prepare_unet(state, keys, get_family(family))
    assert single_file_loading.weight_mismatches(unet, weights) == ""
    for field, value in published["unet"].items():
        got = unet.config[field]
        if isinstance(value, int) and isinstance(got, (list, tuple)):  # SD1's "8 heads" is stored as an int
            got = set(got).pop() if len(set(got)) == 1 else got
        assert (list(got) if isinstance(got, (list, tuple)) else got) == (
            list(value) if isinstance(value, tuple) else value
        ), field
    vae, weights = single_file_loading.prepare_vae(state, keys, get_family(family))
    assert single_file_loading.weight_mismatches(vae, weights) == ""
    assert list(vae.config.block_out_channels) == list(published["vae"]["block_out_channels"])
    encoders = single_file_loading.prepare_text_encoders(state, keys, get_family(family))
    assert len(encoders) == len(published["text"])
    for (what, model, weights), expected in zip(encoders, published["text"]):
        assert single_file_loading.weight_mismatches(model, weights) == "", what
        for field, value in expected.items():
            assert getattr(model.config, field) == value, (what, field)


def test_ckpt_with_training_objects_loads_weights_only(sd1, sd1_loaded, tmp_path):
    """A .ckpt with {"state_dict": ..., "global_step", a pickled callback}: weights load, no pickled code runs."""
    path = tmp_path / "sd1.ckpt"
    trip = Tripwire()
    trip.payload = 1
    torch.save({"state_dict": load_file(str(sd1[1])), "global_step": 1234, "callbacks": {"cb": trip}}, str(path))
    base = load_base_model(path)
    assert base.family == "sd1"
    _same_weights(base.unet, sd1_loaded[0].unet)
    assert TRIPPED == []


def test_base_model_carries_training_schedule_and_tokenizers(sd1_loaded, sdxl_loaded):
    """noise_scheduler is DDPM scaled_linear 0.00085..0.012 over 1000 steps; tokenizers are 77 long;
    SDXL's second pads "!"."""
    for base in (*sd1_loaded, *sdxl_loaded):
        cfg = base.noise_scheduler.config
        assert type(base.noise_scheduler).__name__ == "DDPMScheduler"
        assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps) == (
            "scaled_linear",
            0.00085,
            0.012,
            1000,
        )
        assert cfg.prediction_type == base.prediction_type
        assert all(t.model_max_length == 77 for t in base.tokenizers)
        assert len(base.tokenizers) == len(base.text_encoders)
        assert not any(p.requires_grad for p in base.unet.parameters())
    assert sdxl_loaded[1].tokenizers[1].pad_token == "!" and sdxl_loaded[1].tokenizers[0].pad_token == "<|endoftext|>"


@pytest.mark.parametrize("source", [0, 1], ids=["diffusers folder", "single file"])
def test_deferred_encoders_load_when_asked_and_as_an_eager_load_would(sdxl, sdxl_loaded, source, offline):
    """defer_encoders (a training run whose inputs may all be cached): no VAE, text encoder or tokenizer until
    ensure_encoders(), the VAE's downscale known without it; then the same weights and tokenizers as at once."""
    base = load_base_model(sdxl[source], defer_unet=True, defer_encoders=True)
    eager = sdxl_loaded[source]
    assert base.vae is None and base.text_encoders == [] and base.tokenizers == []
    assert base.vae_downscale() == eager.vae_downscale() == 2 ** (len(eager.vae.config.block_out_channels) - 1)
    base.ensure_encoders()
    for a, b in zip([eager.vae, *eager.text_encoders], [base.vae, *base.text_encoders]):
        _same_weights(a, b)
    assert [t.pad_token for t in base.tokenizers] == [t.pad_token for t in eager.tokenizers] == ["<|endoftext|>", "!"]
    assert not any(p.requires_grad for m in (base.vae, *base.text_encoders) for p in m.parameters())
    assert base.encoders_loader is None and offline == []


def test_progress_reports_the_slow_steps(sd1):
    """progress(message) hears about reading and converting each component."""
    messages = []
    load_base_model(sd1[1], progress=messages.append)
    joined = "\n".join(messages)
    for fragment in ("reading", "text encoder", "UNet", "VAE", "loaded sd1"):
        assert fragment in joined


def test_missing_path_and_plain_folder_are_explained(tmp_path):
    """A path that does not exist, and a folder without model_index.json, each get their own error."""
    with pytest.raises(HeadshotError) as missing:
        load_base_model(tmp_path / "nowhere.safetensors")
    assert missing.value.code == "base_model_not_found"
    with pytest.raises(HeadshotError) as plain:
        load_base_model(tmp_path)
    assert plain.value.code == "not_a_base_model" and "model_index.json" in plain.value.message


def test_hub_id_offline_fails_fast_and_says_to_use_a_local_file(offline):
    """With HF_HUB_OFFLINE=1 an uncached hub id fails at once with hub_unreachable, without a connection attempt."""
    started = time.monotonic()
    with pytest.raises(HeadshotError) as caught:
        load_base_model("headshot-tests/no-such-model")
    assert time.monotonic() - started < 15
    assert caught.value.code == "hub_unreachable"
    assert "local" in caught.value.message and "headshot-tests/no-such-model" in caught.value.message
    assert offline == []
