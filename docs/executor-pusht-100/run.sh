#!/usr/bin/env bash
# 100 PushT episodes with DDIM-10 on the shipped teacher: executor=local (2 threads, 1 thread) vs executor=dask (2 workers x 1 thread).
set -u
cd /work/main
D=docs/executor-pusht-100
: > $D/times.txt
run() {
  name=$1; shift
  rm -rf $D/$name
  s=$(date +%s.%N)
  policy-accel eval sampler=ddim-10 n_seeds=100 output_dir=$D/$name "$@" > $D/$name.log 2>&1
  rc=$?
  e=$(date +%s.%N)
  echo "$name rc=$rc wall_s=$(python -c "print(round($e-$s,1))") load=$(cut -d' ' -f1-3 /proc/loadavg) args: $*" >> $D/times.txt
}
run dask-2x1 executor=dask dask.n_workers=2 dask.threads_per_worker=1
run local-2threads executor=local threads=2
run local-1thread executor=local threads=1
