"""kohya LoRA format: the target sets and the kohya key names of UNet and text encoder modules.

Full-size UNets and text encoders are built on the meta device (no memory, no weights) to check
module counts and names; the one test that injects peft layers uses a tiny randomly initialised model.

Module counts, from the architectures (sd-scripts logs the same numbers when it creates a LoRA):
* SD1.5 / SD2 UNet: 16 Transformer2DModels (down 3 levels x 2, mid 1, up 3 levels x 3), one
  transformer block each. Per transformer: proj_in + proj_out = 2; per block: attn1 and attn2
  to_q/to_k/to_v/to_out.0 = 8, ff.net.0.proj + ff.net.2 = 2. 16 * (2 + 10) = 192.
* SDXL UNet: transformers at down level 1 (2, depth 2), down level 2 (2, depth 10), mid (1, depth
  10), up level 0 (3, depth 10), up level 1 (3, depth 2): 11 transformers holding
  4 + 20 + 10 + 30 + 6 = 70 blocks. 11 * 2 + 70 * 10 = 722 ("create LoRA for U-Net: 722 modules").
* CLIP ViT-L text encoder: 12 layers * 6 = 72; OpenCLIP bigG (SDXL te2): 32 layers * 6 = 192.

The tiny models, fixtures and loading helpers live in lora_format_helpers; the names test_lora_patch
and test_train import from here are re-exported. peft <-> kohya state dicts, diffusers loading, and
files and metadata are tested in test_lora_conversion, test_lora_in_diffusers and
test_lora_files_and_metadata.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from lora_format_helpers import (  # noqa: F401  (re-exported for test_lora_patch and test_train)
    ALPHA,
    RANK,
    TINY_SDXL_UNET,
    _load_into,
    _lora_layers,
    _no_key_warnings,
    _tiny_sd1,
    _tiny_sdxl,
    sd1_lora,
    sdxl_lora,
)
from peft import LoraConfig, inject_adapter_in_model
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from headshot.errors import HeadshotError
from headshot.train.lora_names import component_prefix, kohya_module_name
from headshot.train.lora_targets import kohya_unet_targets, text_encoder_targets

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


def _meta_unet(cfg):
    with torch.device("meta"):
        return UNet2DConditionModel(**cfg)


def _meta_clip(cls, cfg):
    with torch.device("meta"):
        return cls(CLIPTextConfig(**cfg))


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
