#!/usr/bin/env bash
# Solver benchmarks of issue 11 (items 3 and 4): base (be772ba) vs this branch alternately, then
# every solver on real batches. Writes JSON per run and the load average before each run.
set -u
NEW=/work/wt-solver/target/release/fsnn
BASE=/work/wt-base/target/release/fsnn
OUT=${OUT:-/tmp/x/m}
mkdir -p "$OUT"
cd /work/wt-solver
export MESA_SHADER_CACHE_DIR=/tmp/mesa-cache-solver
run() { # name cmd...
  local name=$1; shift
  echo "$name $(cat /proc/loadavg)" >> "$OUT/load.txt"
  "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.err" || echo "$name FAILED" >> "$OUT/load.txt"
}
for r in 1 2 3; do
  run fc400.base.$r $BASE bench step --preset fc400 --runs 5
  run fc400.new.$r $NEW bench step --preset fc400 --runs 5
done
for s in broyden anderson fixed-point; do
  for r in 1 2 3; do
    run fc400.$s.fmnist.$r $NEW bench step --preset fc400 --dataset fashion-mnist --solver $s --runs 5
  done
done
for r in 1 2; do
  run conv64.base.$r $BASE bench step --preset conv64 --runs 2
  run conv64.new.$r $NEW bench step --preset conv64 --runs 2
done
for s in broyden anderson fixed-point; do
  run conv64.$s.mnist.1 $NEW bench step --preset conv64 --dataset mnist --solver $s --runs 2
done
echo done >> "$OUT/load.txt"
