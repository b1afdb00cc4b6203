"""Benchmark: peak memory of loading a single-file checkpoint, against the size of the models it builds.

Each load runs in its own process; its peak resident set size (ru_maxrss, which also counts the
pages of any memory-mapped file the process has touched) is compared with the bytes of the built
modules' parameters and buffers plus the process's size before loading. A loader that holds the
file's tensors, or a map of the file, beside the models shows up as overhead.

    .venv/bin/python benchmarks/load_benchmark.py [--checkpoint FILE.safetensors] [--dtype fp32|bf16] [--work-dir DIR]

Without --checkpoint a random full-size SD1.5 file is written once (tools/make_random_sd15_checkpoint.py).
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

ROOT = Path(__file__).resolve().parents[1]
DTYPES = ("fp32", "bf16", "fp16")


def child(checkpoint: Path, dtype_name: str) -> dict:
    import torch

    from headshot.train.base_model_loading import load_base_model

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    started = time.perf_counter()
    base = load_base_model(checkpoint, dtype=getattr(torch, {"fp32": "float32"}.get(dtype_name, dtype_name)))
    seconds = time.perf_counter() - started
    modules = [base.unet, base.vae, *base.text_encoders]
    model_bytes = sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": seconds, "before_gb": before, "models_gb": model_bytes / 2**30, "peak_gb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="the precision the models are built in")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.checkpoint, args.dtype)), flush=True)
        return
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="load-benchmark-"))
    checkpoint = args.checkpoint or work / "random-sd15-fp16.safetensors"
    if not checkpoint.is_file():
        print(f"writing a random full-size SD1.5 checkpoint to {checkpoint}", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "tools" / "make_random_sd15_checkpoint.py"), str(checkpoint)], check=True
        )
    command = [sys.executable, __file__, "--child", "--checkpoint", str(checkpoint), "--dtype", args.dtype]
    run = subprocess.run(command, capture_output=True, text=True)
    line = next((out for out in run.stdout.splitlines() if out.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"loading failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    r = json.loads(line[7:])
    floor = r["before_gb"] + r["models_gb"]
    size = checkpoint.stat().st_size / 2**30
    print(f"{checkpoint.name} ({size:.2f} GiB) -> {args.dtype} models in {r['seconds']:.1f} s")
    print(f"process before loading {r['before_gb']:.2f} GB + built models {r['models_gb']:.2f} GB = {floor:.2f} GB")
    print(f"peak resident {r['peak_gb']:.2f} GB: {r['peak_gb'] / floor:.3f}x (overhead {r['peak_gb'] - floor:+.2f} GB)")


if __name__ == "__main__":
    main()
