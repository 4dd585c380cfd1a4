#!/bin/bash
# The figures of docs/benchmarks.md, "Picard near its limit" (issue 23), on a quiet machine, 2 torch threads.
# 1. rounds / NFE / chunk latency per window and variant (PushT teacher, 20 demo observations, batch 1);
# 2. the same for the MT10 teacher at batch 1 and at batch 50 (per-sample windows);
# 3. PushT rollouts, batch 1, seed-paired: DDPM-100 against the Picard variants (picard_bench_pusht.sh).
cd "$(dirname "$0")/../.." && mkdir -p runs docs/picard-figures
V="picard:extrapolate,semilinear:extrapolate,semilinear:student"
python scripts/picard_rounds.py --threads 2 --timing --windows 8,16,32,64 --variants "$V" \
  --json docs/picard-figures/rounds_pusht.json > docs/picard-figures/rounds_pusht.md
python scripts/picard_rounds.py --checkpoint checkpoints/metaworld_mt10_teacher.safetensors --threads 2 --timing \
  --observations 20 --windows 8,16,32 --variants "$V" \
  --json docs/picard-figures/rounds_mt10_batch1.json > docs/picard-figures/rounds_mt10_batch1.md
python scripts/picard_rounds.py --checkpoint checkpoints/metaworld_mt10_teacher.safetensors --threads 2 --timing \
  --observations 50 --batch 50 --windows 4,8,16 --variants "picard:extrapolate,semilinear:extrapolate" \
  --json docs/picard-figures/rounds_mt10_batch50.json > docs/picard-figures/rounds_mt10_batch50.md
bash docs/picard-figures/picard_bench_pusht.sh
