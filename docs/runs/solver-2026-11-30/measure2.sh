#!/usr/bin/env bash
set -u
NEW=/work/wt-solver/target/release/fsnn
OUT=${OUT:-/tmp/x/m}
cd /work/wt-solver
export MESA_SHADER_CACHE_DIR=/tmp/mesa-cache-solver
run() { local name=$1; shift
  echo "$name $(cat /proc/loadavg)" >> "$OUT/load.txt"
  "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.err" || echo "$name FAILED" >> "$OUT/load.txt"; }
for s in broyden anderson fixed-point; do
  run conv64.$s.mnist.1 $NEW bench step --preset conv64 --dataset mnist --solver $s --runs 1
done
echo done2 >> "$OUT/load.txt"
