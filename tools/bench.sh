#!/usr/bin/env bash
# Runs the benchmark suite (`fsnn bench peak`, `fsnn bench kernels`, `fsnn bench step` for fc400
# over T = 5, 30, 100 and for conv64 at T = 30) and appends a dated section with the adapter,
# driver, commit and every table to docs/BENCHMARKS.md; the JSON reports go to runs/bench/ and the
# step charts to docs/img/. FSNN_BENCH_STEPS=0 skips the (slow) training-step part. Extra arguments go to fsnn before the subcommand, e.g. `tools/bench.sh --adapter 1`.
# FSNN_BIN=path uses an already built binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
export MESA_SHADER_CACHE_DIR=${MESA_SHADER_CACHE_DIR:-/tmp/mesa-cache}

if [ -n "${FSNN_BIN:-}" ]; then
  fsnn=$FSNN_BIN
else
  cargo build --release -p fsnn-cli
  fsnn=target/release/fsnn
fi
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git rev-parse --short=12 HEAD)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit-dirty"
mkdir -p runs/bench

info=$("$fsnn" "$@" info | sed -n '1,4p')
peak=$("$fsnn" "$@" bench peak)
kernels=$("$fsnn" "$@" bench kernels 2>/dev/null)
"$fsnn" "$@" bench peak --json >"runs/bench/peak-$stamp.json"
"$fsnn" "$@" bench kernels --json >"runs/bench/kernels-$stamp.json"
steps=""
if [ "${FSNN_BENCH_STEPS:-1}" != 0 ]; then
  mkdir -p docs/img
  fc=$("$fsnn" "$@" bench step --preset fc400 --time-steps 5,30,100 --runs 5 --chart docs/img/step-fc400.png)
  conv=$("$fsnn" "$@" bench step --preset conv64 --time-steps 30 --runs 1 --chart docs/img/step-conv64.png)
  steps=$(printf '%s\n\n%s\n' "$fc" "$conv")
fi

{
  echo
  echo "## $stamp: $(echo "$info" | sed -n '1s/^adapter *//p')"
  echo
  echo "- commands: \`fsnn${*:+ $*} bench peak\`, \`fsnn${*:+ $*} bench kernels\` (via \`tools/bench.sh${*:+ $*}\`)"
  echo "- commit: \`$commit\`; host: $(nproc) CPU cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) before the run"
  echo
  echo '```'
  echo "$info"
  echo
  echo "$peak"
  echo
  echo "$kernels"
  if [ -n "$steps" ]; then
    echo
    echo "$steps"
  fi
  echo '```'
} >>docs/BENCHMARKS.md
echo "appended a section to docs/BENCHMARKS.md (JSON in runs/bench/)"
