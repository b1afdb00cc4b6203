"""Configurations read off the tensor shapes of a single-file checkpoint.

Single files carry no configuration, so the architecture of every component is read from the
weights (channels, levels, blocks per level, transformer depth, context width, text-encoder width,
layers and vocabulary), using the family's layout facts (headshot.families) where the weights are
silent (fixed head counts, VAE scaling, default size).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import HeadshotError
from ..families import Family, TextEncoder
from ..families.checkpoint_detection import context_width
from ..families.checkpoint_file import clip_text_prefix, key_indices, tensor_shape


def _heads_for_width(width: int) -> int:
    """Attention heads for a width whose head count is not stored in the weights.

    Every released SD2/SDXL UNet level and every CLIP/OpenCLIP text tower uses 64-wide heads
    (CLIP-L 768/12, OpenCLIP-H 1024/16, bigG 1280/20; SD2/SDXL: num_head_channels 64). Widths
    that are no multiple of 64 only occur in test models, which by diffusers' own test convention
    use 8-wide heads.
    """
    return width // 64 if width % 64 == 0 else max(1, width // 8)


def _arch_error(source: str, what: str) -> HeadshotError:
    return HeadshotError(
        f"{source}: {what}. This layout is not one of SD1/SD2/SDXL's, so it cannot be converted; pass the model's "
        "diffusers folder instead.",
        "unsupported_base_model",
    )


def infer_unet_config(sd: Mapping, keys: set, family: Family, source: str = "this checkpoint") -> dict:
    """A diffusers UNet2DConditionModel config for the LDM/SGM UNet in `sd`."""
    unet_prefix = family.checkpoint_unet_prefix

    def has(k):
        return unet_prefix + k in keys

    def shape(k):
        return tensor_shape(sd, unet_prefix + k)

    def depth(block: str) -> int:
        return len(key_indices(keys, f"{unet_prefix}{block}.1.transformer_blocks."))

    first_channels, in_channels = shape("input_blocks.0.0.weight")[:2]
    levels: list[list[tuple[int, int]]] = [[]]  # per level: (channels, transformer depth) per resnet
    for i in key_indices(keys, unet_prefix + "input_blocks.")[1:]:
        if has(f"input_blocks.{i}.0.op.weight"):
            levels.append([])
            continue
        if not has(f"input_blocks.{i}.0.out_layers.3.weight"):
            raise _arch_error(source, f"input block {i} is neither a ResBlock nor a downsampler")
        levels[-1].append((shape(f"input_blocks.{i}.0.out_layers.3.weight")[0], depth(f"input_blocks.{i}")))
    counts = {len(level) for level in levels}
    if len(counts) != 1 or 0 in counts:
        raise _arch_error(source, f"the UNet levels have different numbers of ResBlocks ({sorted(counts)})")
    layers = counts.pop()
    channels, depths = [], []
    for level in levels:
        if len({c for c, _ in level}) != 1 or len({d for _, d in level}) != 1:
            raise _arch_error(source, "a UNet level mixes widths or transformer depths")
        channels.append(level[0][0])
        depths.append(level[0][1])
    if channels[0] != first_channels:
        raise _arch_error(source, "conv_in's width differs from the first level's")
    n = len(channels)
    outputs = key_indices(keys, unet_prefix + "output_blocks.")
    if len(outputs) != n * (layers + 1):
        raise _arch_error(source, f"{len(outputs)} output blocks for {n} levels of {layers} ResBlocks")
    up_depths = []
    for b in range(n):
        found = {depth(f"output_blocks.{b * (layers + 1) + j}") for j in range(layers + 1)}
        if len(found) != 1:
            raise _arch_error(source, "an up level mixes transformer depths")
        up_depths.append(found.pop())
    if up_depths != depths[::-1]:
        raise _arch_error(source, f"up transformer depths {up_depths} do not mirror the down depths {depths}")
    mid_depth = depth("middle_block")
    if not mid_depth or not has("middle_block.2.in_layers.0.weight"):
        raise _arch_error(source, "the middle block is not ResBlock-transformer-ResBlock")
    if depths[-1] and depths[-1] != mid_depth:
        raise _arch_error(source, "the middle block's transformer depth differs from the deepest level's")
    per_level = [d or 1 for d in depths]
    if not depths[-1]:
        per_level[-1] = mid_depth  # diffusers gives the middle block the last level's depth
    proj_in = next(k for k in sorted(keys) if k.startswith(unet_prefix) and k.endswith(".proj_in.weight"))
    # LDM v1 (SD1) configs fix num_heads at every level; SD2/SDXL: num_head_channels 64
    fixed = family.unet_attention_heads
    heads = [fixed] * n if fixed else [_heads_for_width(c) for c in channels]
    config = {
        "sample_size": family.default_resolution // 8,
        "in_channels": in_channels,
        "out_channels": shape("out.2.weight")[0],
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in up_depths],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "cross_attention_dim": context_width(sd, keys, unet_prefix),
        "attention_head_dim": heads,
        "use_linear_projection": len(tensor_shape(sd, proj_in)) == 2,
        "transformer_layers_per_block": per_level,
        # SD2's 768-v config upcasts attention (fp16 overflow); it changes nothing in fp32
        "upcast_attention": family.upcast_attention,
    }
    time_width = shape("time_embed.0.weight")[0]
    if time_width != 4 * first_channels:
        config["time_embedding_dim"] = time_width
    if family.size_conditioning:
        adm = shape("label_emb.0.0.weight")[1]
        projection = family.text_encoders[-1].checkpoint_prefix + "text_projection"  # the pooled encoder's
        pooled = tensor_shape(sd, projection)[1] if projection in keys else 0
        extra = adm - pooled  # SDXL: pooled text embedding + 6 Fourier-embedded size/crop numbers
        if pooled <= 0 or extra <= 0 or extra % 6:
            raise _arch_error(
                source, f"label_emb takes {adm} features, not pooled text ({pooled}) + 6 size/crop values"
            )
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=extra // 6,
            projection_class_embeddings_input_dim=adm,
        )
    return config


def infer_vae_config(sd: Mapping, keys: set, family: Family) -> dict:
    """A diffusers AutoencoderKL config for the LDM VAE under first_stage_model."""
    vae_prefix = family.checkpoint_vae_prefix

    def shape(k):
        return tensor_shape(sd, vae_prefix + k)

    levels = key_indices(keys, vae_prefix + "encoder.down.")
    config = {
        "in_channels": shape("encoder.conv_in.weight")[1],
        "out_channels": shape("decoder.conv_out.weight")[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": [shape(f"encoder.down.{i}.block.0.conv1.weight")[0] for i in levels],
        "layers_per_block": len(key_indices(keys, vae_prefix + "encoder.down.0.block.")),
        "latent_channels": shape("decoder.conv_in.weight")[1],
        "sample_size": family.default_resolution,
        "scaling_factor": family.vae_scaling_factor,
        "force_upcast": family.vae_force_upcast,
        "mid_block_add_attention": vae_prefix + "encoder.mid.attn_1.q.weight" in keys,
        "use_quant_conv": vae_prefix + "quant_conv.weight" in keys,
        "use_post_quant_conv": vae_prefix + "post_quant_conv.weight" in keys,
    }
    return config


def clip_text_config(sd: Mapping, keys: set, encoder: TextEncoder):
    """A transformers CLIPTextConfig for `encoder`'s text tower in a single file.

    OpenAI CLIP (SD1, SDXL te1) is stored in transformers' layout and uses quick_gelu; OpenCLIP
    (SD2's ViT-H, SDXL's bigG) in open_clip's layout and uses gelu. SD2 conditions on the
    penultimate layer, so its text encoder ends one block early (`drop_last_layer`), as diffusers' does.
    """
    from transformers import CLIPTextConfig

    prefix = encoder.checkpoint_prefix
    if encoder.openclip_layout:
        vocab, width = tensor_shape(sd, prefix + "token_embedding.weight")
        positions = tensor_shape(sd, prefix + "positional_embedding")[0]
        layers = len(key_indices(keys, prefix + "transformer.resblocks."))
        intermediate = tensor_shape(sd, prefix + "transformer.resblocks.0.mlp.c_fc.weight")[0]
        projection = tensor_shape(sd, prefix + "text_projection")[1] if prefix + "text_projection" in keys else width
        act = "gelu"
    else:
        p = clip_text_prefix(keys, prefix)
        assert p is not None  # family detection accepts only files that hold every text encoder
        vocab, width = tensor_shape(sd, p + "embeddings.token_embedding.weight")
        positions = tensor_shape(sd, p + "embeddings.position_embedding.weight")[0]
        layers = len(key_indices(keys, p + "encoder.layers."))
        intermediate = tensor_shape(sd, p + "encoder.layers.0.mlp.fc1.weight")[0]
        projection = width
        act = "quick_gelu"
    if encoder.drop_last_layer:
        layers -= 1
    if layers < 1:
        raise HeadshotError(f"the text encoder under {prefix} has no layers to load.", "unsupported_base_model")
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=_heads_for_width(width),
        max_position_embeddings=positions,
        hidden_act=act,
        projection_dim=projection,
        layer_norm_eps=1e-5,
        # CLIP's BPE puts <|startoftext|> and <|endoftext|> last; padding is <|endoftext|> or "!"
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )
