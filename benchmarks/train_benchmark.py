"""Benchmark: the training engine against a bare PyTorch loop on the same model and targets.

Full-size SD1.5 architecture with random weights (no download), 256 px, LoRA rank 16 on kohya's
192 UNet modules, batch 1, AdamW, fp32, gradient checkpointing, CPU. Each side runs in its own
process so peak memory (max RSS) is its own. Targets: engine >= 0.95x the bare loop's steps per
second, and <= 1.1x its peak memory.

    .venv/bin/python benchmarks/train_benchmark.py [--steps 6] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESOLUTION = 256
RANK, ALPHA = 16, 8.0


def sd15_unet():
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(cross_attention_dim=768, sample_size=64)  # diffusers' defaults are SD1.5's blocks


def save_sd15_folder(folder: Path) -> Path:
    """A random full-size SD1.5 as a diffusers folder, so the engine loads it as it would a real one."""
    import json

    from headshot.train.models import write_clip_tokenizer_files

    base = sd15_base_model()
    base.unet.save_pretrained(folder / "unet")
    base.vae.save_pretrained(folder / "vae")
    base.text_encoders[0].save_pretrained(folder / "text_encoder")
    base.noise_scheduler.save_pretrained(folder / "scheduler")
    write_clip_tokenizer_files(folder / "tokenizer")
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "scheduler": ["diffusers", "DDPMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            }
        )
    )
    return folder


def sd15_base_model():
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from headshot.train.models import BaseModel, find_clip_tokenizer

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    scheduler = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    return BaseModel(
        family="sd1",
        prediction_type="epsilon",
        unet=sd15_unet(),
        vae=vae,
        text_encoders=[text],
        tokenizers=[find_clip_tokenizer()],
        noise_scheduler=scheduler,
        source="random SD1.5",
    )


def bare_loop(steps: int, warmup: int) -> dict:
    """The floor: forward, loss, backward, AdamW on the same LoRA targets; nothing else."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig, inject_adapter_in_model

    from headshot.train.lora_format import kohya_unet_targets

    unet = sd15_unet()
    unet.requires_grad_(False)
    inject_adapter_in_model(
        LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=kohya_unet_targets(unet)),
        unet,
    )
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    latents = torch.randn(1, 4, RESOLUTION // 8, RESOLUTION // 8)
    cond = torch.randn(1, 77, 768)
    times = []
    for _ in range(warmup + steps):
        started = time.perf_counter()
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (1,))
        prediction = unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=cond).sample
        F.mse_loss(prediction, noise).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return {"modules": len(kohya_unet_targets(unet)), "seconds_per_step": sum(times[warmup:]) / steps}


def engine(steps: int, warmup: int, model_dir: Path) -> dict:
    from headshot.samples import astronaut_shots
    from headshot.train.engine import LoraTrainer
    from headshot.train.job import JobFolder
    from headshot.train.settings import TrainSettings

    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "data" / "img" / "10_ohwx woman"
        subset.mkdir(parents=True)
        for i, img in enumerate(list(astronaut_shots().values())[:4]):
            img.convert("RGB").resize((RESOLUTION, RESOLUTION)).save(subset / f"{i}.png")
            (subset / f"{i}.txt").write_text("ohwx woman")
        out = Path(tmp) / "job"
        settings = TrainSettings(
            dataset_dir=str(subset.parent.parent),
            base_model=str(model_dir),
            out_dir=str(out),
            steps=warmup + steps,
            resolution=RESOLUTION,
            rank=RANK,
            alpha=ALPHA,
            lr=1e-4,
            optimizer="adamw",
            scheduler="constant",
            warmup_steps=0,
            gradient_checkpointing=True,
            min_snr_gamma=5.0,
            noise_offset=0.0,
            validation_images=0,
            checkpoint_every=warmup + steps,
            face_backend="dlib",
            device="cpu",
        )
        job = JobFolder(out)
        job.write({"state": "queued", "settings": settings.to_dict()})
        trainer = LoraTrainer(settings, job)  # loads the folder as any user's run does
        trainer.run()
        events, _ = job.events()
        stamps = [e["time"] for e in events if e["type"] == "step"]
        return {
            "modules": len(trainer.unet_targets),
            "seconds_per_step": (stamps[-1] - stamps[warmup - 1]) / steps
            if warmup
            else (stamps[-1] - stamps[0]) / (steps - 1),
        }


def child(which: str, steps: int, warmup: int, model_dir: Path) -> None:
    import torch

    torch.manual_seed(0)
    result = bare_loop(steps, warmup) if which == "bare" else engine(steps, warmup, model_dir)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--child", choices=("bare", "engine", "save"))
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()
    if args.child == "save":
        save_sd15_folder(args.model_dir)
        return
    if args.child:
        child(args.child, args.steps, args.warmup, args.model_dir)
        return
    results = {}
    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(tmp.name) / "random-sd15"
    print(f"writing a random full-size SD1.5 diffusers folder to {model_dir}", flush=True)
    subprocess.run([sys.executable, __file__, "--child", "save", "--model-dir", str(model_dir)], check=True)
    for which in ("bare", "engine"):
        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                which,
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--model-dir",
                str(model_dir),
            ],
            capture_output=True,
            text=True,
        )
        line = next((out for out in run.stdout.splitlines() if out.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{which} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
        results[which] = json.loads(line[7:])
        r = results[which]
        print(
            f"{which:6s}: {r['seconds_per_step']:.2f} s/step ({1 / r['seconds_per_step']:.3f} steps/s), "
            f"peak RSS {r['peak_rss_gb']:.2f} GB, {r['modules']} LoRA modules",
            flush=True,
        )
    speed = results["bare"]["seconds_per_step"] / results["engine"]["seconds_per_step"]
    memory = results["engine"]["peak_rss_gb"] / results["bare"]["peak_rss_gb"]
    print(f"engine speed: {speed:.3f}x the bare loop (target >= 0.95); peak memory: {memory:.3f}x (target <= 1.10)")


if __name__ == "__main__":
    main()
