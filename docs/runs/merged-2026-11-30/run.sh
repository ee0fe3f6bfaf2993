#!/bin/bash
# Base (be772ba) vs new (main), alternating, idle host. Then compare-reference.sh.
set -u
BASE=/tmp/bench/fsnn-base; NEW=/tmp/bench/fsnn-new
cd /work/main
export MESA_SHADER_CACHE_DIR=/tmp/mesa-bench
out=/tmp/bench/out; mkdir -p $out
log() { echo "$(date +%T) load $(cut -d' ' -f1 /proc/loadavg) $*" >> $out/load.txt; }
for r in 1 2 3; do
  log fc400 base $r; $BASE bench step --preset fc400 --runs 5 --json > $out/fc400.base.$r.json 2>>$out/err.txt
  log fc400 new $r;  $NEW bench step --preset fc400 --runs 5 --json > $out/fc400.new.$r.json 2>>$out/err.txt
done
for r in 1 2; do
  log conv64 base $r; $BASE bench step --preset conv64 --runs 2 --json > $out/conv64.base.$r.json 2>>$out/err.txt
  log conv64 new $r;  $NEW bench step --preset conv64 --runs 2 --json > $out/conv64.new.$r.json 2>>$out/err.txt
done
log alexnet base; $BASE bench step --preset alexnet-f --batch-size 16 --time-steps 5 --runs 2 --json > $out/alex.base.json 2>>$out/err.txt
log alexnet new consistent; $NEW bench step --preset alexnet-f --batch-size 16 --time-steps 5 --runs 2 --adjoint consistent --json > $out/alex.new.consistent.json 2>>$out/err.txt
log alexnet new authors; $NEW bench step --preset alexnet-f --batch-size 16 --time-steps 5 --runs 2 --adjoint authors --json > $out/alex.new.authors.json 2>>$out/err.txt
log done-part1
