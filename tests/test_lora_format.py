"""kohya LoRA format: target sets, key names, peft <-> kohya, files, metadata, and diffusers loading.

Full-size UNets and text encoders are built on the meta device (no memory, no weights) to check
module counts and names; everything that runs uses tiny randomly initialised models.

Module counts, from the architectures (sd-scripts logs the same numbers when it creates a LoRA):
* SD1.5 / SD2 UNet: 16 Transformer2DModels (down 3 levels x 2, mid 1, up 3 levels x 3), one
  transformer block each. Per transformer: proj_in + proj_out = 2; per block: attn1 and attn2
  to_q/to_k/to_v/to_out.0 = 8, ff.net.0.proj + ff.net.2 = 2. 16 * (2 + 10) = 192.
* SDXL UNet: transformers at down level 1 (2, depth 2), down level 2 (2, depth 10), mid (1, depth
  10), up level 0 (3, depth 10), up level 1 (3, depth 2): 11 transformers holding
  4 + 20 + 10 + 30 + 6 = 70 blocks. 11 * 2 + 70 * 10 = 722 ("create LoRA for U-Net: 722 modules").
* CLIP ViT-L text encoder: 12 layers * 6 = 72; OpenCLIP bigG (SDXL te2): 32 layers * 6 = 192.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from diffusers import (  # noqa: E402
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model  # noqa: E402
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from headshot.errors import HeadshotError  # noqa: E402
from headshot.train.lora_conversion import kohya_to_peft, peft_to_kohya  # noqa: E402
from headshot.train.lora_files import load_lora, save_lora, write_a1111_sidecar  # noqa: E402
from headshot.train.lora_metadata import kohya_metadata  # noqa: E402
from headshot.train.lora_names import component_prefix, kohya_module_name  # noqa: E402
from headshot.train.lora_targets import kohya_unet_targets, text_encoder_targets  # noqa: E402

# --------------------------------------------------------------------------------------------
# configs

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD2_UNET = dict(SD15_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
CLIP_BIGG = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    hidden_act="gelu",
    projection_dim=1280,
)

TINY_CLIP = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    vocab_size=1000,
    max_position_embeddings=16,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
TINY_SD1_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=2,
    cross_attention_dim=16,
    attention_head_dim=2,
    norm_num_groups=4,
)
# SDXL's shape, shrunk; layers_per_block 1 (full SDXL has 2) so the SGM block numbering must come
# from the config, not from full-size constants
TINY_SDXL_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(8, 16, 32),
    layers_per_block=1,
    transformer_layers_per_block=(1, 1, 2),
    attention_head_dim=2,
    cross_attention_dim=32,  # te1 hidden 16 + te2 hidden 16
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=4,
    projection_class_embeddings_input_dim=6 * 4 + 8,  # 6 time ids * 4 + te2 projection_dim
    norm_num_groups=4,
)

RANK, ALPHA = 4, 2.0  # alpha != rank, so a loader that ignored alpha would show


def _meta_unet(cfg):
    with torch.device("meta"):
        return UNet2DConditionModel(**cfg)


def _meta_clip(cls, cfg):
    with torch.device("meta"):
        return cls(CLIPTextConfig(**cfg))


def _tiny_sd1():
    torch.manual_seed(0)
    return UNet2DConditionModel(**TINY_SD1_UNET).eval(), CLIPTextModel(CLIPTextConfig(**TINY_CLIP)).eval()


def _tiny_sdxl():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_SDXL_UNET).eval()
    te1 = CLIPTextModel(CLIPTextConfig(**TINY_CLIP)).eval()
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_CLIP, projection_dim=8)).eval()
    return unet, te1, te2


def _train_like_engine(model, targets, seed):
    """What the engine does: peft LoRA on the diffusers/transformers module, then its state dict.

    init_lora_weights=False gives lora_B random values (as after training), so the LoRA changes outputs.
    """
    torch.manual_seed(seed)
    # peft's own injection, as the engine does: transformers' add_adapter is gated on the peft version
    inject_adapter_in_model(
        LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets, init_lora_weights=False), model
    )
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    return state


@pytest.fixture(scope="module")
def sd1_lora(tmp_path_factory):
    """A tiny SD1 LoRA file (UNet + TE), the peft states it came from, and fresh base models."""
    unet, te = _tiny_sd1()
    unet_targets, te_targets = kohya_unet_targets(unet), text_encoder_targets(te)
    trained_unet, trained_te = _tiny_sd1()
    unet_state = _train_like_engine(trained_unet, unet_targets, seed=1)
    te_state = _train_like_engine(trained_te, te_targets, seed=2)
    tensors = {
        **peft_to_kohya("sd1", "unet", unet_state, RANK, ALPHA, unet_targets),
        **peft_to_kohya("sd1", "te", te_state, RANK, ALPHA, te_targets),
    }
    path = tmp_path_factory.mktemp("sd1") / "me_sd1.safetensors"
    save_lora(path, tensors, _metadata("sd1"))
    return {
        "path": path,
        "unet_state": unet_state,
        "te_state": te_state,
        "unet_targets": unet_targets,
        "te_targets": te_targets,
    }


@pytest.fixture(scope="module")
def sdxl_lora(tmp_path_factory):
    unet, te1, te2 = _tiny_sdxl()
    targets = {"unet": kohya_unet_targets(unet), "te1": text_encoder_targets(te1), "te2": text_encoder_targets(te2)}
    trained = dict(zip(("unet", "te1", "te2"), _tiny_sdxl()))
    states = {c: _train_like_engine(trained[c], targets[c], seed=i + 3) for i, c in enumerate(targets)}
    tensors = {}
    for comp, state in states.items():
        tensors.update(peft_to_kohya("sdxl", comp, state, RANK, ALPHA, targets[comp], unet_config=unet.config))
    path = tmp_path_factory.mktemp("sdxl") / "me_sdxl.safetensors"
    save_lora(path, tensors, _metadata("sdxl"))
    return {"path": path, "states": states, "targets": targets}


def _metadata(family, **over):
    kw = dict(
        family=family,
        rank=RANK,
        alpha=ALPHA,
        output_name="me_" + family,
        trigger="ohwx",
        class_word="woman",
        tag_frequency={"ohwx woman": 12, "smiling": 5, "outdoors": 2},
        dataset_dirs={"10_ohwx woman": {"n_repeats": 10, "img_count": 12}},
        training={
            "learning_rate": 1e-4,
            "unet_lr": 1e-4,
            "text_encoder_lr": 5e-5,
            "lr_scheduler": "cosine",
            "optimizer": "AdamW8bit",
            "optimizer_args": {"weight_decay": 0.01},
            "seed": 42,
            "max_train_steps": 1500,
            "batch_size": 1,
            "mixed_precision": "bf16",
            "clip_skip": None,
            "training_started_at": 1700000000.0,
            "noise_offset": 0.0357,
            "headshot.preset": "balanced",
        },
        chosen_step=1200,
        resolution=1024 if family == "sdxl" else 512,
    )
    kw.update(over)
    return kohya_metadata(**kw)


# --------------------------------------------------------------------------------------------
# target sets and counts


def test_sd15_full_size_has_192_kohya_unet_targets():
    targets = kohya_unet_targets(_meta_unet(SD15_UNET))
    assert len(targets) == 192
    assert len(set(targets)) == 192
    # 16 transformers x (proj_in, proj_out)
    assert sum(t.endswith(("proj_in", "proj_out")) for t in targets) == 32
    assert "down_blocks.0.attentions.0.proj_in" in targets  # a 1x1 Conv2d in SD1
    assert "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2" in targets
    assert not any("resnets" in t or "samplers" in t or t.endswith("norm") for t in targets)


def test_sd2_full_size_has_192_kohya_unet_targets():
    assert len(kohya_unet_targets(_meta_unet(SD2_UNET))) == 192


def test_sdxl_full_size_has_722_kohya_unet_targets():
    unet = _meta_unet(SDXL_UNET)
    targets = kohya_unet_targets(unet)
    assert len(targets) == 722
    names = [kohya_module_name("sdxl", "unet", t, unet_config=unet.config) for t in targets]
    assert len(set(names)) == 722
    # per SGM section: input 2*(2+2*10) + 2*(2+10*10); middle 2+10*10; output 3*(2+10*10) + 3*(2+2*10)
    assert sum(n.startswith("lora_unet_input_blocks_") for n in names) == 248
    assert sum(n.startswith("lora_unet_middle_block_") for n in names) == 102
    assert sum(n.startswith("lora_unet_output_blocks_") for n in names) == 372


def test_clip_text_encoder_target_counts():
    assert len(text_encoder_targets(_meta_clip(CLIPTextModel, CLIP_L))) == 72
    te2 = _meta_clip(CLIPTextModelWithProjection, CLIP_BIGG)
    targets = text_encoder_targets(te2)
    assert len(targets) == 192
    assert "text_projection" not in targets


def test_targets_are_the_same_after_peft_injection():
    unet, te = _tiny_sd1()
    before_unet, before_te = kohya_unet_targets(unet), text_encoder_targets(te)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=before_unet), unet)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=before_te), te)
    assert kohya_unet_targets(unet) == before_unet
    assert text_encoder_targets(te) == before_te


# --------------------------------------------------------------------------------------------
# names


def test_sd1_names_follow_the_diffusers_layout():
    assert (
        kohya_module_name("sd1", "unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
        == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    )
    assert (
        kohya_module_name("sd1", "unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0")
        == "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0"
    )
    assert (
        kohya_module_name("sd2", "unet", "up_blocks.3.attentions.2.proj_out")
        == "lora_unet_up_blocks_3_attentions_2_proj_out"
    )
    # transformers 5's CLIPTextModel has no text_model. level; kohya names always have it
    for hf_path in ("encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.0.self_attn.q_proj"):
        assert kohya_module_name("sd1", "te", hf_path) == "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert kohya_module_name("sd1", "te", "encoder.layers.11.mlp.fc2") == "lora_te_text_model_encoder_layers_11_mlp_fc2"


@pytest.mark.parametrize(
    "diffusers_name, kohya_name",
    [
        (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
        ),
        ("down_blocks.1.attentions.1.proj_in", "lora_unet_input_blocks_5_1_proj_in"),
        (
            "down_blocks.2.attentions.0.transformer_blocks.9.ff.net.0.proj",
            "lora_unet_input_blocks_7_1_transformer_blocks_9_ff_net_0_proj",
        ),
        (
            "down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_out.0",
            "lora_unet_input_blocks_8_1_transformer_blocks_3_attn2_to_out_0",
        ),
        (
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_k",
            "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_k",
        ),
        ("mid_block.attentions.0.proj_out", "lora_unet_middle_block_1_proj_out"),
        (
            "up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v",
            "lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_v",
        ),
        (
            "up_blocks.0.attentions.2.transformer_blocks.9.ff.net.2",
            "lora_unet_output_blocks_2_1_transformer_blocks_9_ff_net_2",
        ),
        ("up_blocks.1.attentions.2.proj_out", "lora_unet_output_blocks_5_1_proj_out"),
        # beyond kohya's default set (conv_dim LoRAs): resnets, samplers, stem
        ("down_blocks.0.resnets.1.conv1", "lora_unet_input_blocks_2_0_in_layers_2"),
        ("down_blocks.0.downsamplers.0.conv", "lora_unet_input_blocks_3_0_op"),
        ("up_blocks.0.upsamplers.0.conv", "lora_unet_output_blocks_2_2_conv"),
        ("up_blocks.2.resnets.2.conv_shortcut", "lora_unet_output_blocks_8_0_skip_connection"),
        ("mid_block.resnets.1.time_emb_proj", "lora_unet_middle_block_2_emb_layers_1"),
        ("conv_in", "lora_unet_input_blocks_0_0"),
    ],
)
def test_sdxl_full_size_names_follow_the_sgm_layout(diffusers_name, kohya_name):
    config = _meta_unet(SDXL_UNET).config
    assert kohya_module_name("sdxl", "unet", diffusers_name, unet_config=config) == kohya_name
    # without a config, full-size SDXL base is assumed
    assert kohya_module_name("sdxl", "unet", diffusers_name) == kohya_name


def test_sdxl_names_come_from_the_config_not_full_size_constants():
    config = dict(TINY_SDXL_UNET)  # layers_per_block 1: input blocks 1 | 2 (down) | 3, 4 | 5 | 6 ...
    assert (
        kohya_module_name("sdxl", "unet", "down_blocks.1.attentions.0.proj_in", unet_config=config)
        == "lora_unet_input_blocks_3_1_proj_in"
    )
    assert (
        kohya_module_name("sdxl", "unet", "down_blocks.2.attentions.0.proj_in", unet_config=config)
        == "lora_unet_input_blocks_5_1_proj_in"
    )
    assert (
        kohya_module_name("sdxl", "unet", "up_blocks.1.attentions.1.proj_out", unet_config=config)
        == "lora_unet_output_blocks_3_1_proj_out"
    )


def test_sdxl_text_encoder_names():
    assert (
        kohya_module_name("sdxl", "te1", "encoder.layers.0.self_attn.q_proj")
        == "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    )
    assert (
        kohya_module_name("sdxl", "te2", "text_model.encoder.layers.31.mlp.fc1")
        == "lora_te2_text_model_encoder_layers_31_mlp_fc1"
    )
    assert [component_prefix(c) for c in ("unet", "te", "te1", "te2")] == [
        "lora_unet",
        "lora_te",
        "lora_te1",
        "lora_te2",
    ]


def test_sdxl_sgm_names_agree_with_diffusers_own_sgm_conversion():
    """diffusers maps SGM-named kohya keys back with the UNet config; every module must land on itself."""
    conv = pytest.importorskip("diffusers.loaders.lora_conversion_utils")
    for cfg in (SDXL_UNET, TINY_SDXL_UNET):
        unet = _meta_unet(cfg)
        modules = [n for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
        modules = [n for n in modules if not n.startswith("add_embedding")]  # diffusers mangles it for any layout
        sgm = {kohya_module_name("sdxl", "unet", n, unet_config=unet.config) + ".lora_down.weight": n for n in modules}
        remapped = conv._maybe_map_sgm_blocks_to_diffusers(dict(sgm), unet.config)
        assert len(remapped) == len(modules)
        for key, module in remapped.items():
            as_diffusers = "lora_unet_" + module.replace(".", "_") + ".lora_down.weight"
            assert conv._convert_unet_lora_key(key) == conv._convert_unet_lora_key(as_diffusers), key


def test_bad_family_component_and_module_are_refused():
    with pytest.raises(HeadshotError, match="unknown model family"):
        kohya_module_name("sd3", "unet", "x")
    with pytest.raises(HeadshotError, match="te1"):
        kohya_module_name("sd1", "te1", "encoder.layers.0.self_attn.q_proj")
    with pytest.raises(HeadshotError, match="SGM"):
        kohya_module_name("sdxl", "unet", "down_blocks.7.attentions.0.proj_in")


# --------------------------------------------------------------------------------------------
# state dicts


def test_peft_to_kohya_layout(sd1_lora):
    tensors, _ = load_lora(sd1_lora["path"])
    n_unet, n_te = len(sd1_lora["unet_targets"]), len(sd1_lora["te_targets"])
    assert len(tensors) == 3 * (n_unet + n_te)
    base = "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert tensors[f"{base}.lora_down.weight"].shape == (RANK, 8, 1, 1)  # 1x1 conv stays 4-D
    assert tensors[f"{base}.lora_up.weight"].shape == (8, RANK, 1, 1)
    alpha = tensors[f"{base}.alpha"]
    assert alpha.ndim == 0 and alpha.dtype == torch.float32 and alpha.item() == ALPHA
    q = "lora_te_text_model_encoder_layers_1_self_attn_q_proj"
    assert tensors[f"{q}.lora_down.weight"].shape == (RANK, 16)
    assert all(k.split(".")[0].startswith(("lora_unet_", "lora_te_")) for k in tensors)


def test_peft_prefixes_and_adapter_names_are_accepted():
    unet, _ = _tiny_sd1()
    targets = kohya_unet_targets(unet)
    state = _train_like_engine(unet, targets, seed=5)
    plain = peft_to_kohya("sd1", "unet", state, RANK, ALPHA)
    decorated = {"base_model.model." + k.replace(".weight", ".default.weight"): v for k, v in state.items()}
    assert peft_to_kohya("sd1", "unet", decorated, RANK, ALPHA).keys() == plain.keys()


def test_sd1_round_trip_is_exact(sd1_lora):
    unet, te = _tiny_sd1()
    tensors, _ = load_lora(sd1_lora["path"])
    states, alphas = kohya_to_peft("sd1", tensors, unet, te)
    assert set(states) == {"unet", "te"}
    for comp, original in (("unet", sd1_lora["unet_state"]), ("te", sd1_lora["te_state"])):
        assert states[comp].keys() == original.keys()
        for key, value in original.items():
            assert states[comp][key].dtype == value.dtype
            assert torch.equal(states[comp][key], value), key
    assert len(alphas) == len(sd1_lora["unet_targets"]) + len(sd1_lora["te_targets"])
    assert set(alphas.values()) == {ALPHA}
    assert "unet.down_blocks.0.attentions.0.proj_in" in alphas


def test_sdxl_round_trip_is_exact(sdxl_lora):
    unet, te1, te2 = _tiny_sdxl()
    tensors, _ = load_lora(sdxl_lora["path"])
    assert any(k.startswith("lora_unet_input_blocks_3_1_") for k in tensors)
    assert any(k.startswith("lora_unet_middle_block_1_") for k in tensors)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_1_") for k in tensors)
    states, alphas = kohya_to_peft("sdxl", tensors, unet, [te1, te2])
    assert set(states) == {"unet", "te1", "te2"}
    for comp, original in sdxl_lora["states"].items():
        assert states[comp].keys() == original.keys()
        for key, value in original.items():
            assert torch.equal(states[comp][key], value), key
    assert set(alphas.values()) == {ALPHA}


def test_kohya_to_peft_lists_keys_that_match_no_module(sd1_lora):
    unet, te = _tiny_sd1()
    tensors, _ = load_lora(sd1_lora["path"])
    tensors["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = torch.zeros(RANK, 8)
    tensors["lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight"] = torch.zeros(8, RANK)
    with pytest.raises(HeadshotError) as err:
        kohya_to_peft("sd1", tensors, unet, te)
    assert err.value.code == "lora_unknown_modules"
    assert "lora_unet_down_blocks_9_attentions_0_proj_in" in str(err.value)
    # an SD1 LoRA on an SDXL UNet: nothing matches
    sdxl_unet, te1, te2 = _tiny_sdxl()
    with pytest.raises(HeadshotError, match="another model family"):
        kohya_to_peft("sdxl", load_lora(sd1_lora["path"])[0], sdxl_unet, [te1, te2])


def test_peft_to_kohya_refuses_states_it_cannot_describe():
    unet, _ = _tiny_sd1()
    targets = kohya_unet_targets(unet)
    state = _train_like_engine(unet, targets, seed=6)
    with pytest.raises(HeadshotError, match="not rank 8"):
        peft_to_kohya("sd1", "unet", state, 8, ALPHA)
    with pytest.raises(HeadshotError, match="have no weights"):
        peft_to_kohya("sd1", "unet", state, RANK, ALPHA, targets + ["down_blocks.0.resnets.0.conv1"])
    with pytest.raises(HeadshotError, match="not plain LoRA"):
        peft_to_kohya("sd1", "unet", {**state, "x.lora_magnitude_vector.weight": torch.ones(3)}, RANK, ALPHA)


# --------------------------------------------------------------------------------------------
# the LoRA in diffusers


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _load_into(pipe, path):
    """pipe.load_lora_weights, returning every warning diffusers/peft/transformers raised."""
    handler = _Capture()
    loggers = [logging.getLogger(n) for n in ("diffusers", "peft", "transformers")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe.load_lora_weights(str(path), adapter_name="hs")
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    return handler.messages + [str(w.message) for w in caught]


def _lora_layers(model):
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, BaseTunerLayer) and "hs" in getattr(m, "lora_A", {})
    }


def _assert_applied(model, peft_state):
    """Every module of the file got a LoRA layer holding exactly the file's weights and alpha/rank."""
    layers = _lora_layers(model)
    expected = {k[: -len(".lora_A.weight")] for k in peft_state if k.endswith(".lora_A.weight")}
    assert set(layers) == expected
    for name, layer in layers.items():
        assert torch.equal(layer.lora_A["hs"].weight, peft_state[f"{name}.lora_A.weight"]), name
        assert torch.equal(layer.lora_B["hs"].weight, peft_state[f"{name}.lora_B.weight"]), name
        assert layer.scaling["hs"] == pytest.approx(ALPHA / RANK), name


def _scheduler():
    return DDIMScheduler(steps_offset=1, clip_sample=False)


def _no_key_warnings(messages):
    bad = [m for m in messages if any(w in m.lower() for w in ("unexpected", "missing", "not found", "not correctly"))]
    assert not bad, bad


def test_diffusers_sd1_pipeline_loads_every_module(sd1_lora):
    unet, te = _tiny_sd1()
    pipe = StableDiffusionPipeline(
        vae=None,
        text_encoder=te,
        tokenizer=None,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    torch.manual_seed(0)
    sample, hidden = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 16)
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    with torch.no_grad():
        before = unet(sample, 10, encoder_hidden_states=hidden).sample
        te_before = te(ids).last_hidden_state
    _no_key_warnings(_load_into(pipe, sd1_lora["path"]))
    _assert_applied(pipe.unet, sd1_lora["unet_state"])
    _assert_applied(pipe.text_encoder, sd1_lora["te_state"])
    assert len(_lora_layers(pipe.unet)) == len(sd1_lora["unet_targets"])
    with torch.no_grad():
        after = pipe.unet(sample, 10, encoder_hidden_states=hidden).sample
        te_after = pipe.text_encoder(ids).last_hidden_state
    assert not torch.allclose(before, after)
    assert not torch.allclose(te_before, te_after)


def test_diffusers_sdxl_pipeline_loads_every_module(sdxl_lora):
    unet, te1, te2 = _tiny_sdxl()
    pipe = StableDiffusionXLPipeline(
        vae=None,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=_scheduler(),
    )
    torch.manual_seed(0)
    sample, hidden = torch.randn(1, 4, 16, 16), torch.randn(1, 5, 32)
    cond = {"text_embeds": torch.randn(1, 8), "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]])}
    with torch.no_grad():
        before = unet(sample, 10, encoder_hidden_states=hidden, added_cond_kwargs=cond).sample
    _no_key_warnings(_load_into(pipe, sdxl_lora["path"]))
    states = sdxl_lora["states"]
    _assert_applied(pipe.unet, states["unet"])
    _assert_applied(pipe.text_encoder, states["te1"])
    _assert_applied(pipe.text_encoder_2, states["te2"])
    assert len(_lora_layers(pipe.unet)) == len(sdxl_lora["targets"]["unet"])
    with torch.no_grad():
        after = pipe.unet(sample, 10, encoder_hidden_states=hidden, added_cond_kwargs=cond).sample
    assert not torch.allclose(before, after)


# --------------------------------------------------------------------------------------------
# files and metadata


def test_saved_file_is_plain_safetensors_with_string_metadata(sd1_lora):
    from safetensors import safe_open

    with safe_open(str(sd1_lora["path"]), framework="pt") as f:
        meta = f.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    # sd-webui-additional-networks' hash: SHA-256 of everything after the header
    raw = sd1_lora["path"].read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + header :]).hexdigest()
    assert len(meta["sshs_legacy_hash"]) == 8
    assert not list(sd1_lora["path"].parent.glob(".*.tmp"))


def test_kohya_metadata_sd1():
    meta = _metadata("sd1")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_output_name"] == "me_sd1"
    assert json.loads(meta["ss_tag_frequency"]) == {"10_ohwx woman": {"ohwx woman": 12, "smiling": 5, "outdoors": 2}}
    assert json.loads(meta["ss_dataset_dirs"]) == {"10_ohwx woman": {"n_repeats": 10, "img_count": 12}}
    assert meta["ss_resolution"] == "(512, 512)"
    assert meta["ss_steps"] == "1200" and meta["headshot.chosen_step"] == "1200"
    assert meta["ss_max_train_steps"] == "1500"
    assert meta["ss_learning_rate"] == "0.0001" and meta["ss_text_encoder_lr"] == "5e-05"
    assert meta["ss_optimizer"] == "AdamW8bit(weight_decay=0.01)"
    assert meta["ss_num_train_images"] == "120"  # images x repeats, as kohya counts
    assert meta["ss_seed"] == "42" and meta["ss_clip_skip"] == "None"
    assert meta["ss_training_started_at"] == "1700000000.0"
    assert meta["ss_noise_offset"] == "0.0357" and meta["headshot.preset"] == "balanced"
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.implementation"] == "diffusers"
    assert meta["modelspec.title"] == "me_sd1"
    assert meta["modelspec.resolution"] == "512x512"
    assert meta["modelspec.trigger_phrase"] == "ohwx woman"
    assert meta["modelspec.prediction_type"] == "epsilon"


def test_kohya_metadata_sdxl_and_sd2():
    meta = _metadata("sdxl", chosen_step=None)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["ss_resolution"] == "(1024, 1024)" and meta["modelspec.resolution"] == "1024x1024"
    assert "headshot.chosen_step" not in meta and meta["ss_steps"] == "1500"  # the final step
    sd2 = _metadata("sd2", training={"v_parameterization": True, "steps": 800}, resolution=(768, 768))
    assert sd2["ss_v2"] == "True" and sd2["ss_base_model_version"] == "sd_v2_v"
    assert sd2["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert sd2["modelspec.prediction_type"] == "v"
    assert all(isinstance(v, str) for v in sd2.values())


def test_a1111_sidecar(tmp_path, sd1_lora):
    lora = tmp_path / "me.v2.safetensors"
    lora.write_bytes(sd1_lora["path"].read_bytes())
    (tmp_path / "me.v2.json").write_text(json.dumps({"notes": "old", "preview": "keep me"}))
    sidecar = write_a1111_sidecar(lora, activation_text="ohwx woman", preferred_weight=0.8, sd_version="sd1")
    assert sidecar == tmp_path / "me.v2.json"
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    assert {"description", "sd version", "activation text", "preferred weight", "notes"} <= set(data)
    assert data["sd version"] == "SD1" and data["activation text"] == "ohwx woman"
    assert data["preferred weight"] == 0.8 and data["notes"] == "" and data["preview"] == "keep me"
    xl = write_a1111_sidecar(tmp_path / "x.safetensors", activation_text="a", preferred_weight=1, sd_version="SDXL")
    assert json.loads(xl.read_text())["sd version"] == "SDXL"
    with pytest.raises(HeadshotError, match="SD1, SD2 or SDXL"):
        write_a1111_sidecar(lora, activation_text="", preferred_weight=1, sd_version="flux")


def test_load_lora_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(HeadshotError) as err:
        load_lora(tmp_path / "nope.safetensors")
    assert err.value.code == "lora_not_found" and "does not exist" in str(err.value)

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all" * 10)
    with pytest.raises(HeadshotError) as err:
        load_lora(junk)
    assert err.value.code == "lora_not_safetensors" and ".safetensors" in str(err.value)

    pickled = tmp_path / "old.pt"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(1)}, pickled)
    with pytest.raises(HeadshotError, match="pickled"):
        load_lora(pickled)

    checkpoint = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(checkpoint))
    with pytest.raises(HeadshotError) as err:
        load_lora(checkpoint)
    assert err.value.code == "lora_no_keys" and "not a kohya LoRA" in str(err.value)

    diffusers_format = tmp_path / "pytorch_lora_weights.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 2)}, str(diffusers_format))
    with pytest.raises(HeadshotError, match="diffusers/peft-format"):
        load_lora(diffusers_format)
