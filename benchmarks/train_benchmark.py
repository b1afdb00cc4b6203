"""Benchmark: the training engine on a single-file SD1.5 or SDXL checkpoint against a bare PyTorch loop.

The checkpoint is what A1111 and ComfyUI users have: one .safetensors file in the original LDM (SD1.5) or
SGM (SDXL) layout, full size with random weights (tools/make_random_sd15_checkpoint.py; no download). Both
sides train LoRA rank 16 on kohya's UNet modules (192 for SD1.5, 722 for SDXL), batch 1, AdamW, fp32,
gradient checkpointing, on the CPU. The bare loop is the floor: forward, loss, backward and optimizer step
on a UNet built in memory, inputs made up (for SDXL also the pooled text and size conditioning), nothing
else. Each side is a whole process (its own peak memory), sides alternate, and the
figures are medians over the pairs:

- start-up: process start to the first training step (bare: building the UNet and its LoRA; the engine:
  reading the file (the VAE and text encoders only when an input is not cached), caching latents and text
  embeddings, injecting the LoRA; its photos are written before either side starts, as a user's are on disk
  before training). The engine's start-up is shown twice: with an empty input cache (the first run) and with
  the cache its first run left (a resumed, repeated or swept run);
- per step: seconds per optimizer step after the warm-up steps;
- peak memory: the process's maximum resident set size.

Targets (issue 13): engine peak <= 1.1x the bare loop's, per-step speed >= 0.98x, start-up <= bare + 5 s.
Run it with nothing else running on the machine:

    .venv/bin/python benchmarks/train_benchmark.py [--pairs 3] [--steps 6] [--warmup 2] [--resolution 256]
        [--family sd1|sdxl] [--checkpoint FILE.safetensors] [--work-dir DIR]

SDXL at 512 px: --family sdxl --resolution 512 --steps 2 --warmup 1 (about 20 s a step on a 2-core CPU; the
random SDXL file is 6.9 GB and both sides need about 14 GB of memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK, ALPHA = 16, 8.0
PHOTOS = 4
#: a caption as `headshot prepare` writes one (trigger, class, tagger tags): with caption shuffling each photo
#: has 8 distinct texts for the text encoder, as a user's dataset does
CAPTION = "ohwx woman, 1girl, solo, looking at viewer, smile, short hair, brown hair, upper body, white shirt, outdoors"


def published_unet_config(family: str) -> dict:
    """The released base model's UNet config, from the test helpers (tests/tiny_models.py PUBLISHED)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from tiny_models import PUBLISHED

    return dict(PUBLISHED[family]["unet"])


def bare_loop(steps: int, warmup: int, resolution: int, started: float, family: str = "sd1") -> dict:
    """The floor: forward, loss, backward, AdamW on the same LoRA targets; nothing else."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model

    from headshot.train.lora_targets import kohya_unet_targets

    torch.manual_seed(0)
    if family == "sdxl":
        unet = UNet2DConditionModel(**published_unet_config("sdxl"), sample_size=128)
    else:
        unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)  # diffusers' defaults: SD1.5's blocks
    unet.requires_grad_(False)
    targets = kohya_unet_targets(unet)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=targets)
    inject_adapter_in_model(config, unet)
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    latents = torch.randn(1, 4, resolution // 8, resolution // 8)
    cond = torch.randn(1, 77, unet.config.cross_attention_dim)
    added = None
    if family == "sdxl":  # the pooled bigG embedding and (original size, crop, target size)
        added = {
            "text_embeds": torch.randn(1, 1280),
            "time_ids": torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32),
        }
    startup = time.time() - started
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (1,))
        noisy = scheduler.add_noise(latents, noise, t)
        prediction = unet(noisy, t, encoder_hidden_states=cond, added_cond_kwargs=added).sample
        F.mse_loss(prediction, noise).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"modules": len(targets), "startup_s": startup, "seconds_per_step": statistics.median(times[warmup:])}


def write_dataset(folder: Path, resolution: int) -> Path:
    """The engine's training photos and captions in kohya's layout; written before any side is timed, as a user's
    photos are on disk before training starts (the bare loop makes up its inputs)."""
    from headshot.samples import astronaut_shots

    subset = folder / "img" / "10_ohwx woman"
    subset.mkdir(parents=True)
    for i, img in enumerate(list(astronaut_shots().values())[:PHOTOS]):
        img.convert("RGB").resize((resolution, resolution)).save(subset / f"{i}.png")
        (subset / f"{i}.txt").write_text(CAPTION)
    return folder


def engine(
    steps: int, warmup: int, resolution: int, checkpoint: Path, cache_dir: Path, dataset: Path, started: float
) -> dict:
    from headshot.train.engine import LoraTrainer
    from headshot.train.launch import create_job
    from headshot.train.settings import TrainSettings

    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings(
            dataset_dir=str(dataset),
            base_model=str(checkpoint),
            out_dir=str(Path(tmp) / "job"),
            cache_dir=str(cache_dir),
            steps=warmup + steps,
            resolution=resolution,
            rank=RANK,
            alpha=ALPHA,
            lr=1e-4,
            optimizer="adamw",
            scheduler="constant",
            warmup_steps=0,
            gradient_checkpointing=True,
            mixed_precision="auto",  # on the CPU: fp32 training, as the bare loop; inputs cached as a user gets them
            noise_offset=0.0,
            validation_images=0,
            checkpoint_every=warmup + steps,
            face_backend="dlib",
            device="cpu",
        )
        trainer = LoraTrainer(settings, create_job(settings))
        trainer.run()
        events, _ = trainer.job.events()
        loop_start = next(
            e["time"] for e in events if e["type"] == "status" and e.get("message", "").startswith("training ")
        )
        stamps = [loop_start] + [e["time"] for e in events if e["type"] == "step"]
        per_step = [b - a for a, b in zip(stamps, stamps[1:])]
        return {
            "modules": len(trainer.unet_targets),
            "startup_s": loop_start - started,
            "seconds_per_step": statistics.median(per_step[warmup:]),
            "reading_s": stage_seconds(events, "loading the VAE and text encoders"),
            "encoding_s": stage_seconds(events, "caching latents"),
            "text_s": stage_seconds(events, "caching text embeddings"),
        }


def stage_seconds(events: list[dict], status_start: str) -> float:
    """Seconds from the status that starts a stage ("caching latents": the VAE encoding the photos) to the next
    status (0 when the stage did not run: its results were read from the input cache)."""
    statuses = [e for e in events if e["type"] == "status"]
    for status, following in zip(statuses, statuses[1:]):
        if status.get("message", "").startswith(status_start):
            return following["time"] - status["time"]
    return 0.0


def child(args) -> None:
    started = args.started
    if args.child == "bare":
        result = bare_loop(args.steps, args.warmup, args.resolution, started, args.family)
    else:
        result = engine(
            args.steps, args.warmup, args.resolution, args.checkpoint, args.cache_dir, args.dataset, started
        )
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print("RESULT " + json.dumps(result), flush=True)


def run_side(which: str, args, checkpoint: Path, cache_dir: Path, dataset: Path) -> dict:
    command = [sys.executable, __file__, "--child", which, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--resolution", str(args.resolution), "--checkpoint", str(checkpoint), "--cache-dir", str(cache_dir)]
    command += ["--family", args.family, "--dataset", str(dataset)]
    command += ["--started", repr(time.time())]
    run = subprocess.run(command, capture_output=True, text=True)
    line = next((out for out in run.stdout.splitlines() if out.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{which} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    result = json.loads(line[7:])
    encoding = ""
    if result.get("encoding_s"):
        stages = (("reading", "reading_s"), ("VAE", "encoding_s"), ("text", "text_s"))
        encoding = " (" + ", ".join(f"{result[key]:.1f} s {name}" for name, key in stages) + ")"
    print(
        f"  {which:13s} start-up {result['startup_s']:6.1f} s{encoding}, {result['seconds_per_step']:.2f} s/step, "
        f"peak {result['peak_rss_gb']:.2f} GB, {result['modules']} LoRA modules",
        flush=True,
    )
    return result


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--family", choices=("sd1", "sdxl"), default="sd1", help="the bare loop's UNet (default sd1)")
    parser.add_argument(
        "--checkpoint", type=Path, help="a .safetensors of --family (default: a random one, written once)"
    )
    parser.add_argument("--work-dir", type=Path, help="keep the random checkpoint here between runs")
    parser.add_argument("--child", choices=("bare", "engine"))
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--started", type=float)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="train-benchmark-"))
    checkpoint = args.checkpoint or work / f"random-{'sdxl' if args.family == 'sdxl' else 'sd15'}-fp16.safetensors"
    if not checkpoint.is_file():
        print(f"writing a random full-size {args.family} checkpoint to {checkpoint}", flush=True)
        tool = ROOT / "tools" / "make_random_sd15_checkpoint.py"
        subprocess.run([sys.executable, str(tool), str(checkpoint), "--family", args.family], check=True)
    dataset = write_dataset(Path(tempfile.mkdtemp(prefix="photos-", dir=work)), args.resolution)
    bare, cold, cached = [], [], []
    for pair in range(args.pairs):
        print(f"pair {pair + 1}/{args.pairs}", flush=True)
        cache_dir = Path(tempfile.mkdtemp(prefix="input-cache-", dir=work))
        sides = [("bare", bare), ("engine", cold), ("engine cached", cached)]
        for which, results in sides if pair % 2 == 0 else [sides[1], sides[2], sides[0]]:
            results.append(run_side(which.split()[0], args, checkpoint, cache_dir, dataset))
    speed = median(bare, "seconds_per_step") / median(cold + cached, "seconds_per_step")
    memory = max(median(cold, "peak_rss_gb"), median(cached, "peak_rss_gb")) / median(bare, "peak_rss_gb")
    print(
        f"\nmedians over {args.pairs} pairs, {args.family}, {args.resolution} px, "
        f"{args.steps} steps after {args.warmup} warm-up:"
    )
    print("| | bare loop | engine (empty cache) | engine (cached inputs) | target |")
    print("|---|---|---|---|---|")
    print(
        f"| start-up | {median(bare, 'startup_s'):.1f} s | {median(cold, 'startup_s'):.1f} s | "
        f"{median(cached, 'startup_s'):.1f} s | <= bare + 5 s |"
    )
    print(
        f"| of which reading the VAE and text encoders | | {median(cold, 'reading_s'):.1f} s | "
        f"{median(cached, 'reading_s'):.1f} s | |"
    )
    print(
        f"| of which VAE encoding ({PHOTOS} photos, flipped too) | | {median(cold, 'encoding_s'):.1f} s | "
        f"{median(cached, 'encoding_s'):.1f} s | |"
    )
    print(
        f"| of which text embeddings ({PHOTOS} photos, 8 caption shuffles each) | | {median(cold, 'text_s'):.1f} s | "
        f"{median(cached, 'text_s'):.1f} s | |"
    )
    without = [r["startup_s"] - r["encoding_s"] for r in cold]
    print(f"| start-up less VAE encoding | | {statistics.median(without):.1f} s | | |")
    print(
        f"| per step | {median(bare, 'seconds_per_step'):.2f} s | {median(cold, 'seconds_per_step'):.2f} s | "
        f"{median(cached, 'seconds_per_step'):.2f} s | speed >= 0.98x (now {speed:.3f}x) |"
    )
    print(
        f"| peak memory | {median(bare, 'peak_rss_gb'):.2f} GB | {median(cold, 'peak_rss_gb'):.2f} GB | "
        f"{median(cached, 'peak_rss_gb'):.2f} GB | <= 1.1x (now {memory:.3f}x) |"
    )
    repeat = [sys.argv[0], "--pairs", str(args.pairs), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    repeat += ["--resolution", str(args.resolution), "--family", args.family, "--checkpoint", str(checkpoint)]
    print("\nrepeat with: " + shlex.join([sys.executable, *repeat]))


if __name__ == "__main__":
    main()
