#!/bin/bash
# rtc guidance strength g = 1 on the delay sweep's seeds (100000-100049), to pair with docs/delay-sweep-pusht (g = 4).
cd "$(dirname "$0")/../.." && mkdir -p runs
policy-accel bench n_seeds=50 n_envs=10 threads=1 compare=[] output_dir=docs/delay-sweep-pusht-guidance \
  'samplers=[{name: ddim, num_steps: 10}, {name: ddim, num_steps: 10, label: ddim-10-g1, execution: rtc, rtc_guidance: 1.0}, {name: student, checkpoint: checkpoints/pusht_keypoints_student_4step.safetensors}, {name: student, checkpoint: checkpoints/pusht_keypoints_student_4step.safetensors, label: student-4-g1, execution: rtc, rtc_guidance: 1.0}]' \
  execution=sync 'delay=[0,2,4,6]' > runs/guidance_sweep.log 2>&1
