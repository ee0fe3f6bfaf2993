#!/bin/bash
set -u
cd /work/main
export MESA_SHADER_CACHE_DIR=/tmp/mesa-bench
out=/tmp/bench/out
for bin in base new; do
  echo "$(date +%T) fc400 $bin" >> $out/load.txt
  bash /work/shared/tools/compare-reference.sh /tmp/IDE-FSNN /tmp/bench/fsnn-$bin fc400 3 > $out/ref.fc400.$bin.json 2>>$out/referr.txt
done
for bin in base new; do
  echo "$(date +%T) conv64 $bin" >> $out/load.txt
  bash /work/shared/tools/compare-reference.sh /tmp/IDE-FSNN /tmp/bench/fsnn-$bin conv64 1 > $out/ref.conv64.$bin.json 2>>$out/referr.txt
done
echo "$(date +%T) done-ref" >> $out/load.txt
