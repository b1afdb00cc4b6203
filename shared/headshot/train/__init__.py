"""Train: a kohya-compatible identity LoRA from a prepared dataset.

Modules:
  models       base-model loading (single file LDM/SGM, diffusers folder, hub id), family detection,
               local tokenizers
  lora_format  kohya key naming, ss_* metadata, A1111 sidecar, reading LoRA files back
  presets      fast / balanced / quality defaults, each traced to its source
  engine       the builtin diffusers + peft training loop
  job          job folders, events, the worker process, cancel and resume
  selection    likeness-scored checkpoint choice
  sd_scripts   the optional kohya sd-scripts backend
"""
