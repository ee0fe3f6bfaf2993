#!/usr/bin/env bash
# The checks that need a real GPU, as one prepared run for a session that is lent one (the device
# tool: about 15 minutes of device time in all, so everything is built here and only run there).
#
#   tools/gpu-check.sh prepare        here: builds fsnn and the GPU-vs-CPU kernel tests, copies
#                                     them stripped with the Vulkan loader's package into
#                                     target/gpu-check/ (under 64 MiB: carry that path)
#   tools/gpu-check.sh run [OUTDIR]   there (OUTDIR defaults to $OUT): the adapter report, the
#                                     kernel tests on the GPU, `fsnn tune` (every kernel variant
#                                     and event form timed at the presets' shapes), `fsnn bench
#                                     kernels`, and fc400 / conv64 steps on each simulation path
#
# e.g. device run: command `tools/gpu-check.sh run`, carry ["target/gpu-check"], timeout_s 540.
# GPU_CHECK_QUICK=1 shrinks every measurement (to try the script on any adapter in seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/gpu-check

case "${1:-}" in
prepare)
  cargo build --release -p fsnn-cli
  kernels=$(cargo test --release -p fsnn-tests --test kernels --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kernels":
        print(m["executable"])')
  rm -rf "$dir" && mkdir -p "$dir/debs"
  strip -o "$dir/fsnn" target/release/fsnn
  strip -o "$dir/kernels" "$kernels"
  # A bare machine may lack the Vulkan loader; its GPU driver brings the rest.
  (cd "$dir/debs" && apt-get download libvulkan1 >/dev/null)
  du -sh "$dir"
  ;;
run)
  out=${2:-${OUT:?run needs OUTDIR or \$OUT}}
  mkdir -p "$out"
  if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in "$dir"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
  fsnn=$dir/fsnn
  export FSNN_CACHE_DIR=$out/cache
  quick=()
  steps=(--runs 3)
  if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then
    quick=(--quick)
    steps=(--runs 1 --batch-size 8 --time-steps 2)
  fi
  log=$out/gpu-check.log
  {
    echo "== $(date -u +%FT%TZ) fsnn info --all"
    "$fsnn" info --all
    "$fsnn" info --json >"$out/info.json"
    echo "== kernel tests (GPU against the CPU twins)"
    "$dir/kernels" --test-threads 4 2>&1 | grep -E '^test |test result|panicked|worst' || true
    echo "== fsnn tune"
    "$fsnn" tune "${quick[@]}"
    echo "== fsnn bench kernels"
    "$fsnn" bench kernels "${quick[@]}"
    "$fsnn" bench kernels "${quick[@]}" --json >"$out/kernels.json"
    for preset in fc400 conv64; do
      for k in auto dense event; do
        echo "== fsnn bench step --preset $preset --kernels $k"
        t=()
        if [ "$preset" = conv64 ] && [ "${GPU_CHECK_QUICK:-0}" != 1 ]; then t=(--time-steps 30); fi
        "$fsnn" bench step --preset "$preset" --kernels "$k" "${steps[@]}" "${t[@]}"
      done
    done
    echo "== done $(date -u +%FT%TZ)"
  } 2>&1 | tee "$log"
  ;;
*)
  sed -n '2,15p' "$0"
  exit 2
  ;;
esac
