#!/usr/bin/env bash
# The GPU checks, in one go on a CUDA machine (most important first, each logged on its own):
#   1. the CUDA pipeline: fp16 training with the loss scaler, the kohya LoRA saved, sampling with it
#      (benchmarks/gpu_pipeline_check.py);
#   2. the engine against the bare loop, SD1.5 at 512 px as the README's 8 GB card trains it (bf16 or fp16
#      autocast, no gradient checkpointing, batch 1): per step, and GPU memory against gpu_budget.py's figure;
#   3. the same for SDXL at 1024 px as the 12 GB card trains it (gradient checkpointing, batch 1).
# The random full-size checkpoints are written into WORK_DIR once (2.1 GB and 6.9 GB).
#
#   benchmarks/gpu_checks.sh WORK_DIR [LOG_DIR]      (PYTHON=... to choose the interpreter)
set -u
work=${1:?usage: benchmarks/gpu_checks.sh WORK_DIR [LOG_DIR]}
logs=${2:-$work}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
make_checkpoint="$here/../tools/make_random_sd15_checkpoint.py"
sd15=$work/random-sd15-fp16.safetensors
sdxl=$work/random-sdxl-fp16.safetensors
mkdir -p "$work" "$logs"
failed=""

run() {  # run NAME COMMAND...: its output on the screen and in LOG_DIR/NAME.log; a failure is noted, not fatal
    local name=$1
    shift
    echo "== $name: $*"
    local started=$SECONDS
    "$@" 2>&1 | tee "$logs/$name.log"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit $status after $((SECONDS - started)) s"
    [ "$status" = 0 ] || failed="$failed $name"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c 'import sys, torch, diffusers, transformers, peft; print("python", sys.version.split()[0], "torch",
torch.__version__, "diffusers", diffusers.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'

[ -f "$sd15" ] || "$py" "$make_checkpoint" "$sd15" || exit 1
run pipeline_fp16 "$py" "$here/gpu_pipeline_check.py" "$sd15" "$work/pipeline" --mixed-precision fp16
cp "$work"/pipeline/*.png "$logs"/ 2>/dev/null
run sd15_512 "$py" "$here/train_benchmark.py" --device cuda --resolution 512 --pairs 2 --steps 30 --warmup 5 \
    --no-checkpointing --checkpoint "$sd15" --work-dir "$work"
[ -f "$sdxl" ] || "$py" "$make_checkpoint" "$sdxl" --family sdxl || exit 1
run sdxl_1024 "$py" "$here/train_benchmark.py" --device cuda --family sdxl --resolution 1024 --pairs 1 --steps 10 \
    --warmup 3 --checkpoint "$sdxl" --work-dir "$work"

if [ -n "$failed" ]; then
    echo "FAILED:$failed (logs in $logs)"
    exit 1
fi
echo "all GPU checks passed (logs in $logs)"
