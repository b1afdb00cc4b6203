"""GPU check: the CUDA paths no CPU test can reach, end to end on a full-size single-file checkpoint.

Trains a LoRA on the GPU in the given precision (fp16: autocast with the loss scaler; bf16; no), saves it in
kohya's format, reads it back into the sampler and draws a 512 px headshot with it (text to image, then a
masked repaint of the face area, as the detailer does), all on the CUDA device. The checkpoint has RANDOM
weights (tools/make_random_sd15_checkpoint.py), so the pictures are noise: what this proves is that each path
runs on a real GPU with finite numbers, the LoRA file round-trips and changes the picture, and how long and how
much GPU memory each part takes. Stops with a non-zero exit on any failure.

    python benchmarks/gpu_pipeline_check.py CHECKPOINT.safetensors OUT_DIR [--mixed-precision fp16] [--steps 20]
        [--device cpu --resolution 64 --size 64 --sample-steps 2: a dry run of the script on the CPU]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def peak_memory(device: str, reset: bool = False) -> str:
    """The GPU's peak of live tensors since the last reset (the process's peak RSS on a CPU dry run)."""
    import resource

    import torch

    if device != "cuda":
        return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB of process memory"
    if reset:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB of tensors"


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else device


def train(args, out: Path) -> Path:
    import torch
    from train_benchmark import write_dataset

    from headshot.train.engine import LoraTrainer
    from headshot.train.launch import create_job
    from headshot.train.settings import TrainSettings

    dataset = write_dataset(Path(tempfile.mkdtemp(prefix="photos-", dir=out)), args.resolution)
    settings = TrainSettings(
        dataset_dir=str(dataset),
        base_model=str(args.checkpoint),
        out_dir=str(out / "job"),
        steps=args.steps,
        resolution=args.resolution,
        rank=16,
        alpha=8.0,
        lr=1e-3,  # large, so that a few steps move the LoRA visibly
        optimizer="adamw",
        scheduler="constant",
        warmup_steps=0,
        mixed_precision=args.mixed_precision,
        validation_images=0,
        checkpoint_every=args.steps,
        face_backend="dlib",
        device=args.device,
    )
    peak_memory(args.device, reset=True)
    started = time.perf_counter()
    trainer = LoraTrainer(settings, create_job(settings))
    result = trainer.run()
    events, _ = trainer.job.events()
    losses = [e["loss"] for e in events if e["type"] == "step"]
    scaler = trainer.scaler
    print(
        f"train: {len(losses)} steps, {args.mixed_precision} on {device_name(args.device)}, "
        f"{time.perf_counter() - started:.1f} s, peak {peak_memory(args.device)}; "
        f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; loss scaler: "
        f"{f'scale {scaler.get_scale():.0f}' if scaler else 'none'}"
    )
    if not all(np.isfinite(losses)):
        sys.exit(f"FAILED: a loss is not finite: {losses}")
    lora = Path(result["lora"])
    if not lora.is_file():
        sys.exit(f"FAILED: no LoRA file at {lora}")
    del trainer
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return lora


def check_picture(image, what: str) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32)
    if not np.isfinite(pixels).all() or pixels.std() < 1.0:
        sys.exit(f"FAILED: {what} is blank (std {pixels.std():.2f}: NaN latents decode to one colour)")
    return pixels


def sample(args, lora: Path, out: Path) -> None:
    from PIL import Image

    from headshot.sampling.diffusers_sampler import DiffusersSampler
    from headshot.sampling.protocol import LoraWeight, MaskedImageToImage, TextToImage

    peak_memory(args.device, reset=True)
    started = time.perf_counter()
    sampler = DiffusersSampler(str(args.checkpoint), device=args.device)
    print(f"sampler: loaded in {time.perf_counter() - started:.1f} s ({sampler.family}, {sampler.dtype})")
    side, steps = args.size, args.sample_steps
    request = dict(prompt="ohwx woman, professional headshot", negative="blurry", steps=steps, cfg=7.0, seed=0)
    pictures = {}
    for name, loras in (("without LoRA", []), ("with LoRA", [LoraWeight(str(lora), 1.0)])):
        for attempt in ("first", "again"):  # the second is the warm figure
            started = time.perf_counter()
            image = sampler.text_to_image(TextToImage(width=side, height=side, loras=loras, **request))
            print(f"text to image {name} ({attempt}): {time.perf_counter() - started:.2f} s for {steps} steps")
        pictures[name] = check_picture(image, f"the picture {name}")
        image.save(out / f"{name.replace(' ', '_')}.png")
    moved = np.abs(pictures["with LoRA"] - pictures["without LoRA"]).mean()
    print(f"the LoRA changes the picture by {moved:.1f} grey levels on average")
    if moved < 0.5:
        sys.exit("FAILED: the trained LoRA did not change the picture")
    mask = Image.new("L", (side, side), 0)
    mask.paste(255, (side * 5 // 16, side * 3 // 16, side * 11 // 16, side * 11 // 16))  # where a face would be
    started = time.perf_counter()
    repaint = sampler.masked_image_to_image(
        MaskedImageToImage(image=image, mask=mask, denoise=0.4, loras=[LoraWeight(str(lora), 1.0)], **request)
    )
    pixels = check_picture(repaint, "the masked repaint")
    outside = np.asarray(mask) == 0
    kept = np.abs(pixels[outside] - pictures["with LoRA"][outside]).mean()
    # a random VAE does not give back what it encodes, so the unmasked part moves too; the finishing stage pastes
    # the original back around each repainted face
    print(f"masked repaint: {time.perf_counter() - started:.2f} s (outside the mask: {kept:.1f} grey levels moved)")
    repaint.save(out / "repaint.png")
    print(f"sampling peak {peak_memory(args.device)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="fp16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=512, help="training resolution")
    parser.add_argument("--size", type=int, default=512, help="the pictures' side")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--device", default="cuda", help="cuda; cpu for a dry run of the script itself")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("this check needs a CUDA GPU (or --device cpu for a dry run)")
    args.out.mkdir(parents=True, exist_ok=True)
    lora = train(args, args.out)
    sample(args, lora, args.out)
    print("GPU pipeline check passed")


if __name__ == "__main__":
    main()
