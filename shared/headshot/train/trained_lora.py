"""The LoRA being trained, read off the live peft layers as kohya writes it: tensors and metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from ..families import get_family
from .dataset import TrainingSet
from .lora_conversion import peft_to_kohya
from .lora_metadata import kohya_metadata
from .settings import TrainSettings


def trained_lora_tensors(base, settings: TrainSettings, unet_targets: list[str]) -> dict[str, torch.Tensor]:
    """The LoRA trained into `base` in kohya's layout, on the CPU: fp16 weights, fp32 alphas."""
    from peft.utils import get_peft_model_state_dict

    s = settings
    assert s.rank is not None and s.alpha is not None  # resolved() filled them from the preset
    tensors = peft_to_kohya(
        base.family,
        "unet",
        get_peft_model_state_dict(base.unet),
        s.rank,
        s.alpha,
        unet_targets,
        unet_config=base.unet,
    )
    if s.text_encoder_lr is not None:
        for component, encoder in zip(get_family(base.family).text_components, base.text_encoders):
            state = get_peft_model_state_dict(encoder)
            tensors.update(peft_to_kohya(base.family, component, state, s.rank, s.alpha))
    return {
        k: v.detach().to("cpu", torch.float16 if v.dim() else torch.float32).contiguous() for k, v in tensors.items()
    }


def trained_lora_metadata(
    family: str,
    settings: TrainSettings,
    training_set: TrainingSet,
    autocast: torch.dtype | None,
    step: int,
    chosen_step: int | None = None,
) -> dict[str, str]:
    """kohya's metadata for the LoRA after `step` steps (`chosen_step`: the checkpoint chosen for export)."""
    s, ts = settings, training_set
    assert s.rank is not None and s.alpha is not None  # resolved() filled them from the preset
    return kohya_metadata(
        family=family,
        rank=s.rank,
        alpha=s.alpha,
        output_name=s.output_name,
        trigger=ts.trigger or "",
        class_word=ts.class_word or "",
        tag_frequency=ts.tag_frequency(),
        dataset_dirs=ts.subsets,
        resolution=s.resolution,
        chosen_step=chosen_step,
        training={
            "steps": step,
            "learning_rate": s.lr,
            "unet_lr": s.lr,
            "text_encoder_lr": s.text_encoder_lr,
            "lr_scheduler": s.scheduler,
            "lr_warmup_steps": s.warmup_steps,
            "optimizer": s.optimizer,
            "num_train_images": len(ts.images),
            "seed": s.seed,
            "min_snr_gamma": s.min_snr_gamma,
            "noise_offset": s.noise_offset,
            "flip_aug": s.flip,
            "shuffle_caption": s.shuffle_captions,
            "gradient_checkpointing": s.gradient_checkpointing,
            # kohya's spelling (ss_mixed_precision: no | fp16 | bf16), not torch's dtype name
            "mixed_precision": {"torch.float16": "fp16", "torch.bfloat16": "bf16"}.get(str(autocast), "no"),
            "max_train_steps": s.steps,
            "batch_size": s.batch_size,
            "preset": s.preset,
            "base_model": Path(s.base_model).name,
            **({"vae_name": Path(s.vae).name} if s.vae else {}),  # ss_vae_name, as kohya writes it
        },
    )
