#!/bin/bash
# The figures of docs/benchmarks.md, "The robot never waits" (issue 21): Diffusion Policy's 100 PushT test seeds
# (100000-100099) and MT10 10 seeds per task, 1 torch thread each. The delay sweep and the robot tables are
# independent single-thread runs; on a 2-core machine the sweep runs beside the two tables (TABLES=1 runs only
# the tables, SWEEP=1 only the sweep). rtc uses the defaults rtc_guidance=4, rtc_span=2; the sweep adds RTC's own
# schedule (rtc_span: null, the whole overlap) and prefix replacement alone (rtc_guidance: 0) for comparison.
cd "$(dirname "$0")/../.." && mkdir -p runs
P="checkpoints/pusht_keypoints_student"
M="checkpoints/metaworld_mt10_student"
if [ -z "$TABLES" ]; then
policy-accel bench n_seeds=100 n_envs=10 threads=1 compare=[] output_dir=docs/delay-sweep-pusht \
  "samplers=[{name: ddim, num_steps: 10}, {name: student, checkpoint: ${P}_4step.safetensors}, {name: ddim, num_steps: 10, label: ddim-10-whole-overlap, execution: rtc, rtc_span: null, delay: [2, 4, 6]}, {name: student, checkpoint: ${P}_4step.safetensors, label: student-4-replace-only, execution: rtc, rtc_guidance: 0.0, delay: [2, 4, 6]}]" \
  'execution=[sync,blocking,async,blend,rtc]' 'delay=[0,1,2,4,6,7]' > runs/delay_sweep.log 2>&1
fi
if [ -z "$SWEEP" ]; then
policy-accel bench n_seeds=100 n_envs=10 threads=1 compare=[] output_dir=docs/robot-table-pusht \
  "samplers=[{name: ddpm, num_steps: 100}, {name: ddim, num_steps: 10}, {name: paraddpm, num_steps: 100, window: auto, tolerance: 0.1}, {name: student, checkpoint: ${P}_4step.safetensors}, {name: student, checkpoint: ${P}_2step.safetensors}, {name: student, checkpoint: ${P}_1step.safetensors}]" \
  'execution=[blocking,async,rtc]' delay=measured > runs/robot_table_pusht.log 2>&1
policy-accel bench env=metaworld_mt10 n_seeds=10 n_envs=10 threads=1 compare=[] output_dir=docs/robot-table-mt10 \
  "samplers=[{name: ddpm, num_steps: 100}, {name: ddim, num_steps: 10}, {name: paraddpm, num_steps: 100, window: auto, tolerance: 0.1}, {name: student, checkpoint: ${M}_4step.safetensors}, {name: student, checkpoint: ${M}_2step.safetensors}, {name: student, checkpoint: ${M}_1step.safetensors}]" \
  'execution=[blocking,async,rtc]' delay=measured > runs/robot_table_mt10.log 2>&1
fi
