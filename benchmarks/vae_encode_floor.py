"""Benchmark: how fast the VAE encoder can go on this machine, against how fast it goes.

Training with an empty input cache encodes every photo (and with flip its mirror) through the SD VAE encoder
before the first step. This prints, for one picture in fp32 on this machine's CPU: the encoder's floating-point
work (PyTorch's FLOP counter on the real architecture, random weights), the time of its convolutions and of
the whole encode (the layout the engine uses: channels-last, one picture per call), and the machine's fp32
matrix-multiply rate. Convolutions running at that rate are at the floor of fp32: only less work (fewer
pictures) or lower precision encodes faster; it also times the encode under bf16 autocast, which the engine
uses where the CPU multiplies bf16 matrices in hardware (AMX), with and without the freed activations' pages
reused (`devices.reusing_freed_memory`, as the engine encodes), and in fp32 with the large convolutions through
NNPACK's Winograd kernels (`headshot.winograd`, which the engine uses on AVX2 CPUs: fewer multiplications than
any direct convolution needs, so faster than the fp32 floor above). The SD1.5 and SDXL VAEs share this encoder.

    .venv/bin/python benchmarks/vae_encode_floor.py [--resolution 256] [--pictures 8] [--repeats 3] [--skip-bf16]

(--skip-bf16 where the CPU has no AMX: bf16 is emulated there, about 9x slower than fp32 on an AVX2 EPYC.)
"""

from __future__ import annotations

import argparse
import statistics
import time


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--pictures", type=int, default=8, help="pictures a run encodes (4 photos with flip: 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-bf16", action="store_true", help="do not time the encode under bf16 autocast")
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from headshot.devices import cpu_has_bf16_matrix_units, reusing_freed_memory
    from headshot.winograd import nnpack_works, winograd_convolutions, winograd_pays_off

    torch.manual_seed(0)
    vae = AutoencoderKL(  # the SD VAE: diffusers' config of the released weights
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    vae.requires_grad_(False).eval().to(memory_format=torch.channels_last)
    picture = torch.randn(1, 3, args.resolution, args.resolution).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            vae.encode(picture)
        flops = counter.get_flop_counts()["Global"]
        total = sum(flops.values())
        conv = sum(n for op, n in flops.items() if "convolution" in str(op))
        encode_s, conv_s = [], []
        for _ in range(args.repeats):
            with torch.profiler.profile() as profile:
                started = time.perf_counter()
                vae.encode(picture)
                encode_s.append(time.perf_counter() - started)
            conv_s.append(sum(e.self_cpu_time_total for e in profile.key_averages() if "convolution" in e.key) / 1e6)
        plain = []
        for _ in range(args.repeats):  # without the profiler's own cost
            started = time.perf_counter()
            vae.encode(picture)
            plain.append(time.perf_counter() - started)
        winograd = []
        if nnpack_works():
            with winograd_convolutions(vae.encoder, enabled=True):
                vae.encode(picture)
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    vae.encode(picture)
                    winograd.append(time.perf_counter() - started)
        half, reused = [], []
        with torch.autocast("cpu", dtype=torch.bfloat16):  # what the engine runs where the CPU has AMX
            for _ in range(0 if args.skip_bf16 else args.repeats + 1):  # the first a warm-up
                started = time.perf_counter()
                vae.encode(picture)
                half.append(time.perf_counter() - started)
            with reusing_freed_memory("cpu"):  # as the engine encodes: freed activations' pages reused
                for _ in range(0 if args.skip_bf16 else args.repeats + 1):
                    started = time.perf_counter()
                    vae.encode(picture)
                    reused.append(time.perf_counter() - started)
    rate = matmul_gflops()
    conv_time, encode_time = statistics.median(conv_s), statistics.median(plain)
    print(f"VAE encoder, one {args.resolution} px picture in fp32, {torch.get_num_threads()} threads:")
    print(f"  work: {total / 1e9:.0f} GFLOP, of which convolutions {conv / 1e9:.0f} GFLOP")
    print(f"  convolutions: {conv_time:.2f} s = {conv / conv_time / 1e9:.0f} GFLOP/s")
    print(f"  whole encode: {encode_time:.2f} s (the rest: group norms, activations, attention)")
    print(f"  this machine's fp32 matrix multiply: {rate:.0f} GFLOP/s")
    print(
        f"{args.pictures} pictures: {args.pictures * encode_time:.1f} s now; at the matrix-multiply rate with "
        f"nothing but convolutions {args.pictures * conv / rate / 1e9:.1f} s"
    )
    if winograd:
        used = "the engine uses it here" if winograd_pays_off() else "the engine does not use it on this CPU"
        print(
            f"with Winograd convolutions (NNPACK): {statistics.median(winograd):.2f} s a picture, {args.pictures} "
            f"pictures {args.pictures * statistics.median(winograd):.1f} s ({used})"
        )
    if args.skip_bf16:
        return
    half_s, reused_s = statistics.median(half[1:]), statistics.median(reused[1:])
    amx = "has AMX: the engine uses it" if cpu_has_bf16_matrix_units() else "has no AMX: the engine stays in fp32"
    print(
        f"under bf16 autocast: {half_s:.2f} s a picture, {args.pictures} pictures {args.pictures * half_s:.1f} s "
        f"(this CPU {amx}); with freed pages reused {reused_s:.2f} s, {args.pictures * reused_s:.1f} s"
    )


if __name__ == "__main__":
    main()
