"""The builtin training engine on tiny SD1.x and SDXL models.

The models are tiny and randomly initialised (tests/tiny_models.py) with the real
architectures; they prove wiring, formats and that training moves the LoRA the
right way (the loss on the training images falls), not image quality. The dataset is three real
photos (the astronaut at 512 px, as `headshot prepare` writes them), trained at 32 px without
gradient checkpointing so the suite stays fast (one run keeps checkpointing on).
"""

from __future__ import annotations

import json

import pytest
import tiny_models
import torch
import torch.nn.functional as F
from test_lora_format import _load_into, _lora_layers, _no_key_warnings
from train_fixtures import _settings, _train, dataset, sd1_folder  # noqa: F401  (fixtures; other modules import them from here)

from headshot.train import lora_conversion, lora_files, lora_names
from headshot.train.base_model_loading import load_base_model
from headshot.train.job import JobFolder
from headshot.train.presets import PRESETS, planned_steps


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory):
    return tiny_models.make_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="module")
def sd1_run(sd1_folder, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("sd1_run")
    trainer, result = _train(
        _settings(dataset, sd1_folder, out, steps=30, checkpoint_every=10, gradient_checkpointing=True)
    )
    return trainer, result, out


def _eval_loss(base, latents, hidden) -> float:
    """Plain denoising loss on fixed noise and timesteps: comparable before and after training."""
    gen = torch.Generator().manual_seed(123)
    total = 0.0
    for lat, emb in zip(latents, hidden):
        for _ in range(8):
            noise = torch.randn(lat.shape, generator=gen)
            t = torch.randint(0, 1000, (1,), generator=gen)
            noisy = base.noise_scheduler.add_noise(lat[None], noise[None], t)
            with torch.no_grad():
                pred = base.unet(noisy, t, encoder_hidden_states=emb[None].float()).sample  # as step_batch casts
            total += F.mse_loss(pred, noise[None]).item()
    return total / (8 * len(latents))


def test_loss_falls_on_a_fixed_tiny_dataset(sd1_run, sd1_folder):
    trainer, _, _ = sd1_run
    latents = [variants[0] for variants in trainer.latents]
    hidden = [embeddings[0].hidden for embeddings in trainer.text_cache]
    before = _eval_loss(load_base_model(sd1_folder), latents, hidden)
    after = _eval_loss(trainer._base, latents, hidden)
    assert after < before * 0.97, (before, after)


def test_lora_keys_follow_kohya_naming_and_cover_every_target(sd1_run):
    trainer, result, _ = sd1_run
    tensors, metadata = lora_files.load_lora(result["lora"])
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    expected = {lora_names.kohya_module_name("sd1", "unet", t) for t in trainer.unet_targets}
    assert modules == expected and len(expected) == len(trainer.unet_targets) > 0
    for module in expected:
        assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= set(tensors)
    assert all(k.startswith("lora_unet_") for k in tensors)
    assert metadata["ss_network_dim"] == "4" and metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["modelspec.trigger_phrase"] == "ohwx woman"


def test_output_folder_holds_one_lora_its_sidecars_and_the_job_record(sd1_run):
    _, result, out = sd1_run
    assert [p.name for p in out.glob("*.safetensors")] == ["headshot_lora.safetensors"]
    sidecar = json.loads((out / "headshot_lora.json").read_text())
    assert sidecar["activation text"] == "ohwx woman" and sidecar["sd version"] == "SD1"
    identity = json.loads((out / "headshot_lora.identity.json").read_text())
    assert identity["backend"] == "dlib" and len(identity["embedding"]) == 128 and identity["images"] == 3
    assert (out / "loss.csv").read_text().count("\n") == 31 and (out / "loss.png").is_file()
    assert [step for step, _ in JobFolder(out).checkpoints()] == [10, 20, 30]


def test_diffusers_load_lora_weights_loads_every_key_and_changes_the_unet(sd1_run, sd1_folder):
    from diffusers import StableDiffusionPipeline

    trainer, result, _ = sd1_run
    pipe = StableDiffusionPipeline.from_pretrained(str(sd1_folder), safety_checker=None, requires_safety_checker=False)
    torch.manual_seed(0)
    sample, hidden = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        before = pipe.unet(sample, 10, encoder_hidden_states=hidden).sample
    messages = _load_into(pipe, result["lora"])
    # a UNet-only LoRA: diffusers notes there is nothing for the text encoder, which is the design
    _no_key_warnings([m for m in messages if not m.startswith("No LoRA keys associated to CLIPTextModel")])
    assert len(_lora_layers(pipe.unet)) == len(trainer.unet_targets)
    with torch.no_grad():
        after = pipe.unet(sample, 10, encoder_hidden_states=hidden).sample
    assert not torch.allclose(before, after)


def test_our_loader_reads_the_lora_back_exactly(sd1_run):
    from peft.utils import get_peft_model_state_dict

    trainer, result, _ = sd1_run
    tensors, _ = lora_files.load_lora(result["lora"])
    states, alphas = lora_conversion.kohya_to_peft("sd1", tensors, trainer._base.unet, trainer._base.text_encoders)
    live = get_peft_model_state_dict(trainer._base.unet)
    assert set(states["unet"]) == set(live)
    for key, value in states["unet"].items():
        assert torch.equal(value, live[key].to(torch.float16)), key  # the file stores fp16
    assert set(alphas.values()) == {4.0}


def test_sdxl_from_single_file_trains_unet_and_both_text_encoders(sdxl_folder, dataset, tmp_path):
    single = tiny_models.save_single_file(sdxl_folder, tmp_path / "tiny_sdxl.safetensors", "sdxl")
    _, result = _train(_settings(dataset, single, tmp_path / "out", steps=4, text_encoder_lr=5e-4))
    tensors, metadata = lora_files.load_lora(result["lora"])
    prefixes = {k.split("_", 2)[0] + "_" + k.split("_", 2)[1] for k in tensors}
    assert prefixes == {"lora_unet", "lora_te1", "lora_te2"}
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)  # SGM naming for SDXL
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl_folder))
    _no_key_warnings(_load_into(pipe, result["lora"]))
    modules = {k.split(".")[0] for k in tensors}
    loaded = sum(len(_lora_layers(m)) for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2))
    assert loaded == len(modules)


def test_sd1_from_single_file_matches_training_from_the_folder(sd1_folder, dataset, tmp_path):
    single = tiny_models.save_single_file(sd1_folder, tmp_path / "tiny_sd1.safetensors", "sd1")
    _, from_file = _train(_settings(dataset, single, tmp_path / "a", steps=3))
    _, from_folder = _train(_settings(dataset, sd1_folder, tmp_path / "b", steps=3))
    a, _ = lora_files.load_lora(from_file["lora"])
    b, _ = lora_files.load_lora(from_folder["lora"])
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


def test_same_seed_gives_the_same_lora(sd1_folder, dataset, tmp_path):
    _, first = _train(_settings(dataset, sd1_folder, tmp_path / "a", steps=3))
    _, second = _train(_settings(dataset, sd1_folder, tmp_path / "b", steps=3))
    a, _ = lora_files.load_lora(first["lora"])
    b, _ = lora_files.load_lora(second["lora"])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_with_faceless_images_reports_no_score(sd1_folder, dataset, tmp_path):
    _, result = _train(
        _settings(
            dataset, sd1_folder, tmp_path / "out", steps=4, checkpoint_every=2, validation_images=2, validation_steps=2
        )
    )
    validation = json.loads((tmp_path / "out" / "validation.json").read_text())
    images = [im for record in validation["checkpoints"] for im in record["images"]]
    assert len(images) == 4 and all(im["faceless"] and im["distance"] is None for im in images)
    assert "had a face" in result["choice"]["reason"] and result["chosen_step"] == 4
    assert lora_files.load_lora(result["lora"])[1]["headshot.chosen_step"] == "4"


def test_prior_preservation_generates_class_images_once(sd1_folder, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSHOT_CACHE", str(tmp_path / "cache"))
    trainer, _ = _train(
        _settings(dataset, sd1_folder, tmp_path / "a", steps=2, class_image_count=2, validation_steps=2)
    )
    cached = sorted((tmp_path / "cache" / "class_images").rglob("class-*.png"))
    assert len(cached) == 2 and len(trainer.prior_latents) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    _train(_settings(dataset, sd1_folder, tmp_path / "b", steps=2, class_image_count=2, validation_steps=2))
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_every_preset_default_names_its_source():
    for preset in PRESETS.values():
        assert all(setting.source.strip() for setting in preset.settings.values()), preset.name


@pytest.mark.parametrize("images, expected", [(1, 400), (3, 600), (20, 800)])
def test_balanced_steps_are_photos_times_200_clamped(images, expected):
    assert planned_steps(PRESETS["balanced"], images) == expected


def test_caption_shuffles_keep_the_trigger_first():
    from headshot.train.dataset import caption_variants

    variants = caption_variants("ohwx woman, smile, orange spacesuit, window, studio light", 8, seed=1)
    assert len(variants) == 8 and len(set(variants)) == 8
    assert all(v.startswith("ohwx woman, ") for v in variants)
    assert all(sorted(v.split(", ")[1:]) == sorted(variants[0].split(", ")[1:]) for v in variants)


def _fixed_loss(base, trainer) -> float:
    """The engine's own loss on fixed noise and timesteps over every cached image (deterministic)."""
    from headshot.train.training_step import diffusion_loss

    generator = torch.Generator().manual_seed(321)
    total = 0.0
    with torch.no_grad():
        for variants, embeddings in zip(trainer.latents, trainer.text_cache):
            emb = embeddings[0]  # in the text encoders' dtype (bf16 on AMX): cast as step_batch casts
            hidden, pooled = emb.hidden[None].float(), None if emb.pooled is None else emb.pooled[None].float()
            for _ in range(4):
                total += (
                    diffusion_loss(base, variants[0][None], hidden, pooled, trainer.settings, generator, None)
                    .mean()
                    .item()
                )
    return total


def test_sdxl_loss_falls_and_diffusers_output_changes_with_its_lora(sdxl_folder, dataset, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    trainer, result = _train(_settings(dataset, sdxl_folder, tmp_path / "out", steps=30, lr=2e-3))
    before = _fixed_loss(load_base_model(sdxl_folder), trainer)
    after = _fixed_loss(trainer._base, trainer)
    assert after < before * 0.97, (before, after)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl_folder))
    torch.manual_seed(0)
    sample = torch.randn(1, 4, 8, 8)
    hidden = torch.randn(1, 77, pipe.unet.config.cross_attention_dim)
    added = {
        "text_embeds": torch.randn(1, pipe.text_encoder_2.config.projection_dim),
        "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
    }
    with torch.no_grad():
        plain = pipe.unet(sample, 10, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    _load_into(pipe, result["lora"])
    with torch.no_grad():
        with_lora = pipe.unet(sample, 10, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    assert not torch.allclose(plain, with_lora)


def test_training_steps_run_where_freed_pages_are_reused_and_the_window_closes(
    sd1_folder, dataset, tmp_path, monkeypatch
):
    """On the CPU every step's activations reuse the pages freed by the step before (devices.reusing_freed_memory,
    measured 5-15 % faster steps); the allocator gets its thresholds back when the run ends, also on an error."""
    from headshot import devices
    from headshot.train import engine

    depths = []
    real_loss = engine.diffusion_loss
    monkeypatch.setattr(engine, "diffusion_loss", lambda *a: depths.append(devices._reuse_depth) or real_loss(*a))
    _train(_settings(dataset, sd1_folder, tmp_path / "a", steps=3, checkpoint_every=3))
    assert depths == [1, 1, 1] and devices._reuse_depth == 0
    monkeypatch.setattr(engine, "diffusion_loss", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _train(_settings(dataset, sd1_folder, tmp_path / "b", steps=3, checkpoint_every=3))
    assert devices._reuse_depth == 0
