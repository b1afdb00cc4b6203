"""Shared pieces of the kohya LoRA format tests (a helper module, not a test file).

The tiny SD1/SDXL model configs and builders, the rank and alpha the LoRAs use, training "like the
engine" (peft LoRA with random lora_B), the kohya metadata the files carry, the module-scoped
`sd1_lora` / `sdxl_lora` fixtures (tiny LoRA files and the peft states they came from), and the
helpers that load a LoRA file into a diffusers pipeline and collect its warnings. Used by
test_lora_format, test_lora_conversion, test_lora_in_diffusers and test_lora_files_and_metadata
(and, through test_lora_format, by test_lora_patch and test_train); importing it skips them where torch,
diffusers, peft, transformers or safetensors is missing.
"""

from __future__ import annotations

import logging
import warnings

import pytest

# a module that imports this one is skipped where one of these is missing
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from diffusers import UNet2DConditionModel  # noqa: E402
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model  # noqa: E402
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from headshot.train.lora_conversion import peft_to_kohya  # noqa: E402
from headshot.train.lora_files import save_lora  # noqa: E402
from headshot.train.lora_metadata import kohya_metadata  # noqa: E402
from headshot.train.lora_targets import kohya_unet_targets, text_encoder_targets  # noqa: E402

# --------------------------------------------------------------------------------------------
# tiny configs

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
# loading a LoRA into diffusers


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


def _no_key_warnings(messages):
    bad = [m for m in messages if any(w in m.lower() for w in ("unexpected", "missing", "not found", "not correctly"))]
    assert not bad, bad
