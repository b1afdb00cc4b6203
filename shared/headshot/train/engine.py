"""The builtin training engine: diffusers models, peft LoRA, kohya-format output.

One step is exactly one UNet forward and backward on cached latents and cached text
embeddings (`training_step`); everything else (sampling the dataset, noise, loss weighting) is a
few tensor ops, so the engine runs as fast as a bare PyTorch loop over the same model.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Callable

import torch

from ..devices import autocast_dtype, free_device_memory, pick_device, return_freed_memory, reusing_freed_memory
from ..errors import HeadshotError
from ..families import get_family
from ..outputs import OutputManifest
from .caching import (
    cache_text_embeddings,
    encode_latents,
    encode_prompt,
    encoding_precision,
    frozen_encoder_dtypes,
)
from .checkpoint_state import load_state, save_checkpoint
from .dataset import TrainingSet, load_training_set
from .input_cache import (
    InputCache,
    base_model_identity,
    images_digest,
    latents_from_tensors,
    latents_to_tensors,
    text_from_tensors,
    text_to_tensors,
)
from .job import Cancelled, JobFolder
from .lora_files import load_lora, save_lora, write_a1111_sidecar
from .lora_targets import kohya_unet_targets, text_encoder_targets
from .loss_curve import draw_loss_curve, trim_loss_log
from .optimizers import grad_scaler, make_lr_schedule, make_optimizer, optimizer_class
from .settings import TrainSettings
from .trained_lora import trained_lora_metadata, trained_lora_tensors
from .training_step import add_lora, diffusion_loss, step_batch


class LoraTrainer:
    """Trains one identity LoRA into a job folder. Construct, then `run()`."""

    def __init__(
        self,
        settings: TrainSettings,
        job: JobFolder,
        base=None,
        training_set: TrainingSet | None = None,
        progress: Callable[[int, int, str], None] | None = None,
    ):
        self.job = job
        self.training_set = training_set or load_training_set(settings.dataset_dir)
        self.device = pick_device(settings.device)
        images = self.training_set.images
        self.settings = settings.resolved(
            len(images), images[0].repeats, self.training_set.resolution, self.device.type == "cuda"
        )
        self.autocast = autocast_dtype(self.device, self.settings.mixed_precision)
        # a missing optional optimizer package stops the run here, before minutes of loading
        optimizer_class(self.settings.optimizer or "adamw")
        self._base = base
        self._encoder_dtypes: tuple[torch.dtype, torch.dtype] | None = None  # set where _load defers the encoders
        self.progress = progress or (lambda done, total, message: None)
        # latents, text embeddings and face embeddings, kept between runs on the same photos
        self.input_cache = InputCache(self.settings.cache_dir or Path(self.settings.out_dir) / "input-cache")
        self.photos_digest = images_digest(images)

    # -- set-up ---------------------------------------------------------------------------------
    def _load(self):
        from .base_model_loading import load_base_model

        s = self.settings
        if self._base is None:
            weights_dtype = self.autocast or torch.float32  # frozen weights in half precision on a GPU
            self._encoder_dtypes = vae_dtype, text_dtype = frozen_encoder_dtypes(s, self.device, weights_dtype)
            self.job.emit("status", message=f"loading base model {s.base_model}")
            # the UNet comes after caching: the VAE and text encoders are gone by then (lower peak memory); those
            # come only when something is not in the input cache (a resumed or swept run may never read them)
            self._base = load_base_model(
                s.base_model,
                tokenizer_dirs=[Path(d) for d in s.tokenizer_dirs],
                dtype=weights_dtype,
                vae_dtype=vae_dtype,
                text_encoder_dtype=text_dtype,
                device=self.device,
                defer_unet=True,
                defer_encoders=True,
                vae_file=s.vae,
            )
        base = self._base
        for module in [base.unet, base.vae, *base.text_encoders]:
            if module is not None:
                module.requires_grad_(False)
        return base

    def _check_resolution(self, base) -> None:
        # the VAE halves the size per level after the first, the UNet again per level after the first
        factor = base.vae_downscale() * 2 ** (len(base.unet.config.block_out_channels) - 1)
        if self.settings.resolution % factor:
            raise HeadshotError(
                f"resolution {self.settings.resolution} must be a multiple of {factor} for this model "
                f"(try {max(factor, self.settings.resolution // factor * factor)})",
                "bad_option",
            )

    def _cache(self, base):
        s = self.settings
        images = self.training_set.images
        fp32 = s.mixed_precision == "no"  # as kohya: no mixed precision, fp32 caches too
        if s.validation_images or s.class_images_dir or s.class_image_count or s.text_encoder_lr is not None:
            self._load_encoders(base)  # they draw pictures or train: needed whatever the cache holds
        vae_weights, text_weights = self._encoder_weights_dtypes(base)
        vae_dtype, encode_autocast = encoding_precision(
            self.device, vae_weights, get_family(base.family).vae_force_upcast, fp32 or s.no_half_vae
        )
        cache = self.input_cache
        model_identity, photos = base_model_identity(s.base_model), self.photos_digest
        precision = [str(vae_dtype)] + ([f"autocast {encode_autocast}"] if encode_autocast else [])
        latents_key = cache.key(
            "latents", base_model_identity(s.base_model, s.vae), photos, s.resolution, s.flip, s.seed, *precision
        )
        self.latents = cache.load_unpacked(latents_key, latents_from_tensors, len(images))
        if self.latents is None:
            how = f" with {Path(s.vae).name}" if s.vae else ""  # the --vae file, so a log says which VAE
            how += " in bf16 (--no-half-vae for fp32)" if torch.bfloat16 in (vae_dtype, encode_autocast) else ""
            self._load_encoders(base)
            self.job.emit("status", message=f"caching latents of {len(images)} images{how}")
            base.vae.to(self.device)
            self.latents = encode_latents(
                base.vae, images, s.resolution, s.flip, self.device, vae_dtype, s.seed, self.progress, encode_autocast
            )
            cache.save(latents_key, *latents_to_tensors(self.latents))
        else:
            self.job.emit("status", message=f"latents of {len(images)} images read from {cache.folder}")
        self.prior_latents, self.prior_text = [], None
        if s.class_images_dir or s.class_image_count:
            from .prior import class_images

            prior = class_images(s, base, self.training_set.class_word, self.job.emit)
            self.prior_latents = encode_latents(
                base.vae, prior, s.resolution, s.flip, self.device, vae_dtype, s.seed + 1, autocast=encode_autocast
            )
            self.prior_text = encode_prompt(base, prior[0].caption, self.device)
        self.text_cache = None
        if s.text_encoder_lr is None:
            _, text_autocast = encoding_precision(self.device, text_weights, False, fp32)
            text_precision = [str(text_weights)] + ([f"autocast {text_autocast}"] if text_autocast else [])
            text_key = cache.key(
                "text", model_identity, photos, s.caption_variants, s.shuffle_captions, s.seed, *text_precision
            )
            self.text_cache = cache.load_unpacked(text_key, text_from_tensors, len(images))
            if self.text_cache is None:
                how = " in bf16" if torch.bfloat16 in (text_weights, text_autocast) else ""
                self._load_encoders(base)
                self.job.emit("status", message=f"caching text embeddings (text encoder frozen){how}")
                self.text_cache = cache_text_embeddings(
                    base, images, s.caption_variants, s.shuffle_captions, s.seed, self.device, text_autocast
                )
                cache.save(text_key, *text_to_tensors(self.text_cache))
            else:
                self.job.emit("status", message=f"text embeddings read from {cache.folder}")
        if not s.validation_images and base.vae is not None:
            # nothing renders images in this run: the VAE (and a frozen text encoder) can go
            base.vae.to("meta")
            if self.text_cache is not None:
                for encoder in base.text_encoders:
                    encoder.to("meta")
            free_device_memory(self.device)
        return_freed_memory()  # the encoders' freed activations, before the UNet loads

    def _encoder_weights_dtypes(self, base) -> tuple[torch.dtype, torch.dtype]:
        """The VAE's and the text encoders' weights' dtypes: as loaded, or as they will load (deferred)."""
        if base.encoders_loader is not None and self._encoder_dtypes is not None:
            return self._encoder_dtypes
        self._load_encoders(base)
        return next(base.vae.parameters()).dtype, next(base.text_encoders[0].parameters()).dtype

    def _load_encoders(self, base) -> None:
        if base.encoders_loader is not None:  # deferred by _load, needed now
            self.job.emit("status", message="loading the VAE and text encoders")
            base.ensure_encoders()

    def _inject(self, base):
        s = self.settings
        if base.unet is None:  # deferred until the encoders were freed: seconds, so say so
            self.job.emit("status", message="loading the UNet")
        base.ensure_unet()
        self._check_resolution(base)
        self.unet_targets = kohya_unet_targets(base.unet)
        params = add_lora(base.unet, self.unet_targets, s.rank, s.alpha, s.seed)
        groups = [{"params": params, "lr": s.lr}]
        self.text_targets = []
        if s.text_encoder_lr is not None:
            for encoder in base.text_encoders:
                targets = text_encoder_targets(encoder)
                self.text_targets.append(targets)
                groups.append({"params": add_lora(encoder, targets, s.rank, s.alpha, s.seed), "lr": s.text_encoder_lr})
        if s.gradient_checkpointing:
            base.unet.enable_gradient_checkpointing()
        base.unet.train()
        self.trainable = [p for g in groups for p in g["params"]]
        self.optimizer = make_optimizer(s.optimizer, groups, s.lr)
        self.lr_schedule = make_lr_schedule(s.scheduler, self.optimizer, s.warmup_steps, s.steps)
        self.scaler = grad_scaler(self.device, self.autocast)

    # -- checkpoints ----------------------------------------------------------------------------
    def metadata(self, step: int, chosen_step: int | None = None) -> dict[str, str]:
        return trained_lora_metadata(
            self._base.family, self.settings, self.training_set, self.autocast, step, chosen_step
        )

    def save_checkpoint(self, step: int, generator: torch.Generator) -> Path:
        folder = self.job.checkpoint_dir(step)
        save_checkpoint(
            folder,
            lambda path: save_lora(
                path, trained_lora_tensors(self._base, self.settings, self.unet_targets), self.metadata(step)
            ),
            step=step,
            trainable=self.trainable,
            optimizer=self.optimizer,
            lr_schedule=self.lr_schedule,
            scaler=self.scaler,
            generator=generator,
        )
        self.job.emit("checkpoint", step=step, path=str(folder / "lora.safetensors"))
        return folder

    def _restore(self, generator: torch.Generator) -> int:
        """The step to go on from: the newest complete checkpoint's, its state loaded (0 when there is none)."""
        checkpoints, legacy = self.job.checkpoints(), self.job.legacy_checkpoints()
        if not checkpoints:
            if legacy:
                raise HeadshotError(
                    f"checkpoint {legacy[-1][1]} was written by an older version and is not loaded "
                    "for safety; start a new job in another --out folder",
                    "legacy_checkpoint",
                )
            trim_loss_log(self.job.path / "loss.csv", 0)
            return 0
        step, folder = checkpoints[-1]
        if legacy and legacy[-1][0] > step:
            self.job.emit(
                "status",
                message=f"checkpoints after step {step} were written by an older version and are "
                f"not loaded for safety; resuming from step {step}",
            )
        load_state(
            folder,
            step,
            trainable=self.trainable,
            optimizer=self.optimizer,
            lr_schedule=self.lr_schedule,
            scaler=self.scaler,
            generator=generator,
        )
        trim_loss_log(self.job.path / "loss.csv", step)
        self.job.emit("resumed", step=step, checkpoint=str(folder))
        return step

    def _stop_if_asked(self) -> None:
        """Between set-up phases (before any step): stop now, nothing new to save, when a stop was asked for."""
        if self.job.cancel_requested():
            checkpoints = self.job.checkpoints()
            raise Cancelled(checkpoints[-1][0] if checkpoints else 0)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to the planned step count (resuming from the last checkpoint if any); returns
        {"step", "lora", "chosen_step", ...}. Raises Cancelled after saving when cancel is asked."""
        from .selection import CheckpointJudge, reference_in_background

        s = self.settings
        assert s.steps is not None and s.checkpoint_every is not None  # resolved() filled them from the preset
        self.job.update(
            state="running", settings=s.to_dict(), total_steps=s.steps, device=str(self.device), worker_pid=os.getpid()
        )
        self._claim_outputs()
        reference = reference_in_background(self)  # the photos' faces, found while the models load
        base = self._load()
        self._stop_if_asked()
        with reusing_freed_memory(self.device):  # the encoders' activations: 40 % faster in reused pages
            self._cache(base)
        self._stop_if_asked()
        self._inject(base)
        generator = torch.Generator().manual_seed(s.seed)
        random.seed(s.seed)
        start = self._restore(generator)
        judge = CheckpointJudge(self, base)
        judge.prepare_reference(reference)
        self.job.emit("status", message=f"training {s.steps} steps from step {start} on {self.device}")
        loss_log = open(self.job.path / "loss.csv", "a", encoding="utf-8")
        if loss_log.tell() == 0:
            loss_log.write("step,loss,lr\n")
        started, done_here = time.monotonic(), 0
        recorded = started
        step = saved = start
        # the steps' activations reuse freed pages too (CPU, SD1.5: 256 px 3.0-3.3 -> 2.65 s a step, 512 px 5 % faster)
        with reusing_freed_memory(self.device), loss_log:
            while step < s.steps:
                if self.job.cancel_requested():
                    if step != saved:  # else the newest checkpoint already holds this state
                        self.save_checkpoint(step, generator)
                    raise Cancelled(step)
                latents, hidden, pooled = step_batch(
                    step, s, self.training_set.images, self.latents, self.text_cache, base, self.device
                )
                loss = diffusion_loss(base, latents, hidden, pooled, s, generator, self.autocast).mean()
                if self.prior_latents:
                    loss = loss + s.prior_loss_weight * self._prior_loss(step, generator)
                if not torch.isfinite(loss):
                    raise HeadshotError(
                        f"the loss became {loss.item()} at step {step + 1}: lower --lr, or use --mixed-precision no",
                        "loss_not_finite",
                    )
                self._optimizer_step(loss)
                step += 1
                done_here += 1
                now = time.monotonic()
                rate = done_here / (now - started)
                lr = self.lr_schedule.get_last_lr()[0]
                value = loss.item()
                loss_log.write(f"{step},{value:.6f},{lr:.3e}\n")
                loss_log.flush()
                self.job.emit(
                    "step",
                    step=step,
                    total=s.steps,
                    loss=round(value, 6),
                    lr=lr,
                    it_per_s=round(rate, 4),
                    eta_s=round((s.steps - step) / rate, 1),
                )
                checkpoint = step % s.checkpoint_every == 0 or step == s.steps
                if checkpoint or now - recorded >= 1.0:  # job.json is fsynced: not on every fast GPU step
                    self.job.update(steps_done=step)
                    recorded = now
                if checkpoint:
                    self.save_checkpoint(step, generator)
                    saved = step
                    judge.judge(step)
                    draw_loss_curve(self.job.path / "loss.csv", self.job.path / "loss.png")
        draw_loss_curve(self.job.path / "loss.csv", self.job.path / "loss.png")
        return self.export(judge)

    def _prior_loss(self, step: int, generator: torch.Generator) -> torch.Tensor:
        """The same denoising loss on one class image with the class prompt (DreamBooth's prior term)."""
        variants = self.prior_latents[step % len(self.prior_latents)]
        dtype = next(self._base.unet.parameters()).dtype
        latents = variants[step // len(self.prior_latents) % len(variants)][None].to(self.device, dtype)
        hidden = self.prior_text.hidden[None].to(self.device, dtype)
        pooled = None if self.prior_text.pooled is None else self.prior_text.pooled[None].to(self.device, dtype)
        return diffusion_loss(self._base, latents, hidden, pooled, self.settings, generator, self.autocast).mean()

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_schedule.step()

    def _claim_outputs(self) -> None:
        """Before any training: the LoRA and its sidecars must not take the name of a file that is not ours."""
        manifest = OutputManifest(self.job.path)
        lora = manifest.claim(self.job.path / f"{self.settings.output_name}.safetensors")
        for suffix in (".json", ".identity.json"):
            manifest.claim(lora.with_suffix(suffix))
        manifest.save()

    def export(self, judge) -> dict:
        """Copy the chosen checkpoint's LoRA into the output folder with full metadata and sidecars."""
        s = self.settings
        assert s.steps is not None  # resolved() filled it from the preset
        chosen = judge.choose()
        source = self.job.checkpoint_dir(chosen["step"]) / "lora.safetensors"
        tensors, _ = load_lora(source)
        out = self.job.path / f"{s.output_name}.safetensors"
        save_lora(out, tensors, self.metadata(s.steps, chosen_step=chosen["step"]))
        trigger = " ".join(t for t in (self.training_set.trigger, self.training_set.class_word) if t)
        sd_version = get_family(self._base.family).a1111_sd_version
        write_a1111_sidecar(out, activation_text=trigger, preferred_weight=0.8, sd_version=sd_version)
        identity = judge.save_reference(out.with_suffix(".identity.json"))
        return {"lora": str(out), "chosen_step": chosen["step"], "choice": chosen, "identity": identity}
