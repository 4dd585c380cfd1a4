#!/bin/bash
# The figures of docs/benchmarks.md, "The robot never waits" (issue 21). Run under flock /tmp/policy_accel_heavy.lock.
# 50 of Diffusion Policy's 100 PushT test seeds (100000-100049): the 100-seed sweep did not fit the session's time box.
cd "$(dirname "$0")/../.."  && mkdir -p runs
policy-accel bench n_seeds=50 n_envs=10 threads=1 compare=[] output_dir=docs/delay-sweep-pusht \
  'samplers=[{name: ddim, num_steps: 10}, {name: student, checkpoint: checkpoints/pusht_keypoints_student_4step.safetensors}, {name: student, checkpoint: checkpoints/pusht_keypoints_student_4step.safetensors, label: student-4-replace-only, execution: rtc, rtc_guidance: 0.0, delay: [2, 4, 6]}]' \
  'execution=[sync,blocking,async,blend,rtc]' 'delay=[0,1,2,4,6,7]' > runs/delay_sweep.log 2>&1
policy-accel bench env=metaworld_mt10 n_seeds=10 n_envs=10 threads=1 compare=[] output_dir=docs/robot-table-mt10 \
  'samplers=[{name: ddpm, num_steps: 100}, {name: ddim, num_steps: 10}, {name: paraddpm, num_steps: 100, window: auto, tolerance: 0.1}, {name: student, checkpoint: checkpoints/metaworld_mt10_student_4step.safetensors}, {name: student, checkpoint: checkpoints/metaworld_mt10_student_2step.safetensors}, {name: student, checkpoint: checkpoints/metaworld_mt10_student_1step.safetensors}]' \
  'execution=[blocking,async,rtc]' delay=measured > runs/robot_table_mt10.log 2>&1
policy-accel bench n_seeds=50 n_envs=10 threads=1 compare=[] output_dir=docs/robot-table-pusht \
  'samplers=[{name: ddpm, num_steps: 100}, {name: ddim, num_steps: 10}, {name: paraddpm, num_steps: 100, window: auto, tolerance: 0.1}, {name: student, checkpoint: checkpoints/pusht_keypoints_student_4step.safetensors}, {name: student, checkpoint: checkpoints/pusht_keypoints_student_2step.safetensors}, {name: student, checkpoint: checkpoints/pusht_keypoints_student_1step.safetensors}]' \
  'execution=[blocking,async,rtc]' delay=measured > runs/robot_table_pusht.log 2>&1
