#!/usr/bin/env bash
# The prepared GPU benchmark of issue 14: one time-boxed script for a lent GPU machine.
#
# From a session whose task is lent a GPU (device tool): carry the pure-Python dependencies as wheels
# (see the device tool's README: pip download ... into .whl/, listed in .git/info/exclude), then
#     run(command="bash scripts/gpu_bench.sh", carry=[".whl"], timeout_s=540)
# Results land in $OUT (the device tool brings them back): bench/report.{json,md} with the eager and
# compiled samplers side by side (each Picard entry's calibration holds the GPU's batch-cost curve), and
# latency.json. Record them with the card's name in docs/benchmarks.md and the README.
# On a CPU it runs too (DEVICE=cpu COMPILE=freeze N_SEEDS=1), which is how it is checked.
set -euo pipefail
OUT="${OUT:-outputs/gpu}"
DEVICE="${DEVICE:-cuda}"
COMPILE="${COMPILE:-true}"          # true: torch.compile(mode="reduce-overhead") on CUDA, freeze on a CPU
N_SEEDS="${N_SEEDS:-20}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps .whl/*.whl
fi
"$PY" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

pa() { "$PY" -m policy_accel.cli.main "$@"; }
S='{name: ddpm, num_steps: 100}'
S="$S,{name: ddpm, num_steps: 100, compile: $COMPILE}"
S="$S,{name: ddim, num_steps: 10},{name: ddim, num_steps: 10, compile: $COMPILE}"
S="$S,{name: paraddpm, num_steps: 100, window: auto, tolerance: 0.1}"
S="$S,{name: paraddpm, num_steps: 100, window: auto, tolerance: 0.1, compile: $COMPILE}"
# issue 23: large windows pay on a GPU (a batch of 32-64 rows costs about one row there)
S="$S,{name: paraddpm, num_steps: 100, window: 32, tolerance: 0.1, label: paraddpm-100-w32}"
S="$S,{name: paraddpm, num_steps: 100, window: 64, tolerance: 0.1, label: paraddpm-100-w64}"
S="$S,{name: paraddpm, num_steps: 100, window: 64, tolerance: 0.1, initial_guess: student, label: paraddpm-100-w64-student}"
S="$S,{name: paraddpm, num_steps: 100, window: 64, tolerance: 0.1, initial_guess: student, compile: $COMPILE, label: paraddpm-100-w64-student-compiled}"
S="$S,{name: paraddim, num_steps: 16, window: 16, tolerance: 0.1, label: paraddim-16-w16}"
S="$S,{name: student, checkpoint: checkpoints/pusht_keypoints_student_4step.safetensors}"
S="$S,{name: student, checkpoint: checkpoints/pusht_keypoints_student_4step.safetensors, compile: $COMPILE}"
pa bench device="$DEVICE" threads=2 n_seeds="$N_SEEDS" output_dir="$OUT/bench" compare=null "samplers=[$S]"
pa latency device="$DEVICE" sampler=paraddpm sampler.window=8 chunks=30 competitors=1 output_dir="$OUT/latency"
# rounds and chunk latency per window on the GPU (deterministic rounds; latencies of this card)
"$PY" scripts/picard_rounds.py --device "$DEVICE" --windows 8,16,32,64,100 --observations "$N_SEEDS" --timing \
  --variants picard:extrapolate,semilinear:extrapolate,semilinear:student --json "$OUT/picard_rounds.json" \
  > "$OUT/picard_rounds.md"
