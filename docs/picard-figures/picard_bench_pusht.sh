#!/bin/bash
# Issue 23's PushT rollout figure: DDPM-100 against ParaDDPM-100 (semilinear, window 16, and window 32 with the
# 1-step student's guess), batch 1, 2 threads, interleaved per seed, on a quiet machine. 50 of Diffusion Policy's
# 100 test seeds: the 100-seed run (about 67 minutes here, DDPM-100 at ~0.55 s a chunk) did not fit the session.
cd "$(dirname "$0")/../.." && mkdir -p runs
policy-accel bench n_seeds=50 n_envs=1 threads=2 compare=[] output_dir=docs/picard-bench-pusht \
  'samplers=[{name: ddpm, num_steps: 100}, {name: paraddpm, num_steps: 100, window: 16, label: paraddpm-100-w16}, {name: paraddpm, num_steps: 100, window: 32, initial_guess: student, label: paraddpm-100-w32-student}]' \
  > runs/picard_bench.log 2>&1
