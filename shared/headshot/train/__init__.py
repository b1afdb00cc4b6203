"""Train: a kohya-compatible identity LoRA from a prepared dataset.

Modules:
  base_model_loading   load_base_model: single file, diffusers folder or hub id (base_model: the result)
  single_file_loading  LDM/SGM single files -> diffusers modules, strictly (configs_from_shapes: their configs)
  diffusers_loading    diffusers folders and hub ids
  clip_tokenizers      CLIP tokenizers from local sources only
  lora_targets         kohya's LoRA target modules
  lora_names           the kohya module-name rule
  lora_conversion      peft <-> kohya state dicts
  lora_files           LoRA files (atomic, with hashes), the A1111 sidecar
  lora_metadata        sd-scripts' ss_* / modelspec.* metadata
  launch               checks, job folder and worker for a training run (what the CLI and hosts call)
  presets      fast / balanced / quality defaults, each traced to its source
  engine       the builtin diffusers + peft training loop
  training_step  one step's pieces: LoRA injection, the step's batch, the denoising loss
  trained_lora   the LoRA being trained as kohya tensors and metadata
  job          job folders, events, the worker process, cancel and resume
  job_listing  the jobs under a jobs root as hosts show them: list, status, cancel
  selection    likeness-scored checkpoint choice
  sd_scripts   the optional kohya sd-scripts backend
"""
