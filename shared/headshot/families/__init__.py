"""What is known about each base-model family (sd1, sd2, sdxl), one module each, and one registry.

    family.py               the Family / TextEncoder records every stage reads
    sd1.py, sd2.py, sdxl.py one Family each
    registry.py             register_family, get_family (names and aliases), family_names
    sgm_layout.py           diffusers UNet names -> the SGM layout (single files, SDXL's kohya names)
    checkpoint_file.py      single files read lazily, .ckpt with weights_only
    checkpoint_detection.py the family of a single file or a diffusers folder
    lora_detection.py       the family of a kohya LoRA, and whether it fits a base model

A new family (SD3, Flux) is one module filling a Family and one line in registry.py.
"""

from .checkpoint_detection import base_model_family, detect_checkpoint, detect_diffusers, diffusers_folder_family
from .family import Family, TextEncoder
from .lora_detection import check_lora_families, check_loras_fit, families_of_lora_keys, lora_families
from .registry import families, family_for_comfyui_config, family_names, get_family, register_family, unregister_family

__all__ = [
    "Family",
    "TextEncoder",
    "base_model_family",
    "check_lora_families",
    "check_loras_fit",
    "detect_checkpoint",
    "detect_diffusers",
    "diffusers_folder_family",
    "families",
    "families_of_lora_keys",
    "family_for_comfyui_config",
    "family_names",
    "get_family",
    "lora_families",
    "register_family",
    "unregister_family",
]
