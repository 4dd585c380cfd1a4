#!/usr/bin/env bash
# Fixed-seed eval/bench reports for the restructure's before/after comparison. $1 = out dir.
set -x
OUT=$1
S=/work/shared
policy-accel eval sampler=ddim-10 n_seeds=6 n_envs=3 threads=1 output_dir=$OUT/eval_pusht_ddim10
policy-accel eval sampler=paraddim-16 sampler.window=4 n_seeds=3 n_envs=3 threads=1 output_dir=$OUT/eval_pusht_paraddim
policy-accel bench n_seeds=2 threads=1 'samplers=[{name: ddim, num_steps: 10},{name: paraddim, num_steps: 16, window: 4, tolerance: 0.1},{name: student, checkpoint: "${project:checkpoints/pusht_keypoints_student_4step.safetensors}"},{name: ddim, num_steps: 4}]' 'compare=[[student-4, ddim-4]]' output_dir=$OUT/bench_pusht
policy-accel eval env=metaworld_mt10 sampler=ddim-4 n_seeds=1 threads=1 output_dir=$OUT/eval_mt10_ddim4
policy-accel eval checkpoint=$S/fixtures/diffusion_policy/lowdim_cnn.ckpt sampler=ddim-10 n_seeds=2 n_envs=2 threads=1 max_steps=40 output_dir=$OUT/eval_dp
policy-accel eval checkpoint=$S/fixtures/lerobot/diffusion_state sampler=ddim-10 n_seeds=2 n_envs=2 threads=1 max_steps=40 output_dir=$OUT/eval_lerobot
