#!/bin/bash
cd /work/main
export MESA_SHADER_CACHE_DIR=/tmp/mesa-bench
for bin in base new; do
  bash /work/shared/tools/compare-reference.sh /tmp/IDE-FSNN /tmp/bench/fsnn-$bin alexnet-f 1 > /tmp/bench/out/ref.alex.$bin.json 2>>/tmp/bench/out/referr.txt
done
echo done > /tmp/bench/out/ref.alex.done
