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
- CPU time before step 1: the process's CPU seconds (all threads) when its first step starts; on the CPU that
  divided by the cores is the shortest start-up any ordering or overlap of the same work could reach;
- per step: seconds per optimizer step after the warm-up steps;
- peak memory: the process's maximum resident set size.

Targets (issue 13): engine peak <= 1.1x the bare loop's, per-step speed >= 0.98x, start-up <= bare + 5 s.
Run it with nothing else running on the machine:

    .venv/bin/python benchmarks/train_benchmark.py [--pairs 3] [--steps 6] [--warmup 2] [--resolution 256]
        [--family sd1|sdxl] [--checkpoint FILE.safetensors] [--work-dir DIR]

SDXL at 512 px: --family sdxl --resolution 512 --steps 2 --warmup 1 (about 20 s a step on a 2-core CPU; the
random SDXL file is 6.9 GB and both sides need about 14 GB of memory).

On a GPU (--device cuda) both sides train in the precision the engine picks there (--mixed-precision auto:
bf16 autocast where the card has it, else fp16 with a loss scaler; the frozen UNet in that dtype, the LoRA in
fp32), with or without gradient checkpointing (--no-checkpointing) and at --batch N, and each side also reports
the GPU memory a card needs: the allocator's peak plus the CUDA context, to set against
benchmarks/gpu_budget.py. benchmarks/gpu_checks.sh runs the README's card settings.
"""

from __future__ import annotations

import argparse
import json
import os
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


def bare_loop(args, started: float) -> dict:
    """The floor: forward, loss, backward, AdamW on the same LoRA targets; nothing else. On a GPU in the precision
    the engine picks there (frozen UNet in bf16/fp16, LoRA in fp32, autocast; a loss scaler for fp16)."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model

    from headshot.devices import autocast_dtype
    from headshot.train.lora_targets import kohya_unet_targets

    device, resolution, batch = torch.device(args.device), args.resolution, args.batch
    autocast = autocast_dtype(device, args.mixed_precision)
    torch.manual_seed(0)
    with device:  # built where it trains: random initialisation of 2.6 G parameters is slow on a CPU
        if args.family == "sdxl":
            unet = UNet2DConditionModel(**published_unet_config("sdxl"), sample_size=128)
        else:
            unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)  # diffusers' defaults: SD1.5's
    unet.requires_grad_(False)
    if autocast is not None:
        unet.to(autocast)
    targets = kohya_unet_targets(unet)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights="gaussian", target_modules=targets)
    inject_adapter_in_model(config, unet)
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    if args.checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type) if autocast == torch.float16 else None
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    weights = autocast or torch.float32
    latents = torch.randn(batch, 4, resolution // 8, resolution // 8, device=device, dtype=weights)
    cond = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device, dtype=weights)
    added = None
    if args.family == "sdxl":  # the pooled bigG embedding and (original size, crop, target size)
        size = [resolution, resolution, 0, 0, resolution, resolution]
        added = {
            "text_embeds": torch.randn(batch, 1280, device=device, dtype=weights),
            "time_ids": torch.tensor([size] * batch, device=device, dtype=weights),
        }
    if device.type == "cuda":  # the build's fp32 weights are not part of training's peak
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    startup, startup_cpu = time.time() - started, time.process_time()
    times = []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,), device=device)
        noisy = scheduler.add_noise(latents, noise, t)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            prediction = unet(noisy, t, encoder_hidden_states=cond, added_cond_kwargs=added).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # as the engine, which logs every step's loss
        times.append(time.perf_counter() - t0)
    return {
        "modules": len(targets),
        "startup_s": startup,
        "startup_cpu_s": startup_cpu,
        "seconds_per_step": statistics.median(times[args.warmup :]),
    }


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


def engine(args, started: float) -> dict:
    from headshot.train.engine import LoraTrainer
    from headshot.train.launch import create_job
    from headshot.train.settings import TrainSettings

    with tempfile.TemporaryDirectory() as tmp:
        steps, warmup = args.steps, args.warmup
        settings = TrainSettings(
            dataset_dir=str(args.dataset),
            base_model=str(args.checkpoint),
            out_dir=str(Path(tmp) / "job"),
            cache_dir=str(args.cache_dir),
            steps=warmup + steps,
            resolution=args.resolution,
            batch_size=args.batch,
            rank=RANK,
            alpha=ALPHA,
            lr=1e-4,
            optimizer="adamw",
            scheduler="constant",
            warmup_steps=0,
            gradient_checkpointing=args.checkpointing,
            mixed_precision=args.mixed_precision,  # auto: fp32 on the CPU, as the bare loop; bf16 on a recent GPU
            noise_offset=0.0,
            validation_images=0,
            checkpoint_every=warmup + steps,
            face_backend="dlib",
            device=args.device,
        )
        job, loop_cpu = create_job(settings), []
        emit = job.emit

        def emit_noting_cpu(kind: str, **fields) -> dict:
            # the process's CPU time (every thread) when the loop starts: the work start-up did, whatever the cores
            if kind == "status" and fields.get("message", "").startswith("training "):
                loop_cpu.append(time.process_time())
            return emit(kind, **fields)

        job.emit = emit_noting_cpu  # type: ignore[method-assign]
        trainer = LoraTrainer(settings, job)
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
            "startup_cpu_s": loop_cpu[0],
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


def gpu_memory() -> dict:
    """What the card held: the tensors' peak, the allocator's reserved peak, and the CUDA context and libraries
    (the device's used memory less what the allocator holds, read at the end); `gpu_peak_gb` is the sum a card
    needs, the figure to set against `benchmarks/gpu_budget.py`."""
    import torch

    free, total = torch.cuda.mem_get_info()
    context = (total - free - torch.cuda.memory_reserved()) / 1e9
    reserved = torch.cuda.max_memory_reserved() / 1e9
    return {
        "gpu_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
        "gpu_reserved_gb": reserved,
        "gpu_context_gb": context,
        "gpu_peak_gb": reserved + context,
        "gpu": torch.cuda.get_device_name(),
    }


def child(args) -> None:
    result = bare_loop(args, args.started) if args.child == "bare" else engine(args, args.started)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    if args.device == "cuda":
        result.update(gpu_memory())
    print("RESULT " + json.dumps(result), flush=True)


def run_side(which: str, args, checkpoint: Path, cache_dir: Path, dataset: Path) -> dict:
    command = [sys.executable, __file__, "--child", which, *run_options(args), "--checkpoint", str(checkpoint)]
    command += ["--cache-dir", str(cache_dir), "--dataset", str(dataset), "--started", repr(time.time())]
    run = subprocess.run(command, capture_output=True, text=True)
    line = next((out for out in run.stdout.splitlines() if out.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{which} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    result = json.loads(line[7:])
    encoding = ""
    if result.get("encoding_s"):
        stages = (("reading", "reading_s"), ("VAE", "encoding_s"), ("text", "text_s"))
        encoding = " (" + ", ".join(f"{result[key]:.1f} s {name}" for name, key in stages) + ")"
    gpu = ""
    if "gpu_peak_gb" in result:
        gpu = (
            f", GPU {result['gpu_peak_gb']:.2f} GB (tensors {result['gpu_allocated_gb']:.2f}, reserved "
            f"{result['gpu_reserved_gb']:.2f}, context {result['gpu_context_gb']:.2f})"
        )
    print(
        f"  {which:13s} start-up {result['startup_s']:6.1f} s{encoding}, {result['seconds_per_step']:.3f} s/step, "
        f"peak {result['peak_rss_gb']:.2f} GB{gpu}, {result['modules']} LoRA modules",
        flush=True,
    )
    return result


def run_options(args) -> list[str]:
    """The options both sides and the repeat command share."""
    options = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--resolution", str(args.resolution)]
    options += ["--family", args.family, "--device", args.device, "--batch", str(args.batch)]
    options += ["--mixed-precision", args.mixed_precision]
    return options + ([] if args.checkpointing else ["--no-checkpointing"])


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
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="auto")
    parser.add_argument(
        "--no-checkpointing", dest="checkpointing", action="store_false", help="train without gradient checkpointing"
    )
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
        f"{args.steps} steps after {args.warmup} warm-up, batch {args.batch}, {args.device}, "
        f"{'with' if args.checkpointing else 'no'} gradient checkpointing:"
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
    # work, not waiting: divided by the cores, the shortest start-up any ordering or overlap of it could reach
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    floor = median(cold, "startup_cpu_s") / cores
    bound = f"first run on {cores} cores: >= {floor:.1f} s however overlapped" if args.device == "cpu" else ""
    print(
        f"| CPU time before step 1 | {median(bare, 'startup_cpu_s'):.1f} s | {median(cold, 'startup_cpu_s'):.1f} s | "
        f"{median(cached, 'startup_cpu_s'):.1f} s | {bound} |"
    )
    print(
        f"| per step | {median(bare, 'seconds_per_step'):.3f} s | {median(cold, 'seconds_per_step'):.3f} s | "
        f"{median(cached, 'seconds_per_step'):.3f} s | speed >= 0.98x (now {speed:.3f}x) |"
    )
    if args.device == "cuda":
        gpu = max(median(cold, "gpu_peak_gb"), median(cached, "gpu_peak_gb")) / median(bare, "gpu_peak_gb")
        for key, label in (("gpu_peak_gb", "GPU memory a card needs"), ("gpu_allocated_gb", "of which tensors")):
            row = " | ".join(f"{median(side, key):.2f} GB" for side in (bare, cold, cached))
            print(f"| {label} | {row} | " + (f"engine / bare {gpu:.3f}x |" if key == "gpu_peak_gb" else "|"))
    # on a GPU the target is the card's memory (above); the process's own memory is shown without one
    label, target = ("peak memory", f"<= 1.1x (now {memory:.3f}x)")
    if args.device == "cuda":
        label, target = "host memory (RSS)", f"{memory:.3f}x"
    print(
        f"| {label} | {median(bare, 'peak_rss_gb'):.2f} GB | {median(cold, 'peak_rss_gb'):.2f} GB | "
        f"{median(cached, 'peak_rss_gb'):.2f} GB | {target} |"
    )
    repeat = [sys.argv[0], "--pairs", str(args.pairs), *run_options(args), "--checkpoint", str(checkpoint)]
    print("\nrepeat with: " + shlex.join([sys.executable, *repeat]))


if __name__ == "__main__":
    main()
