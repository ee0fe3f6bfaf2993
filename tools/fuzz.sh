#!/usr/bin/env bash
# Long fuzz campaigns of every file parser (IDX, N-MNIST, CIFAR, safetensors checkpoints, PNG/JPEG
# folders): the test suite's fuzz tests with many more mutations and a fresh seed per round.
#   tools/fuzz.sh [CASES_PER_PARSER] [ROUNDS]       e.g. tools/fuzz.sh 100000 10
# Each round prints its seed; rerun a failure with FSNN_FUZZ_SEED=<seed> FSNN_FUZZ_CASES=<n>
# cargo test --release -p fsnn --test fuzz -- --nocapture.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-20000}
rounds=${2:-1}
cargo test --release -p fsnn --test fuzz --no-run
for round in $(seq 1 "$rounds"); do
  seed=${FSNN_FUZZ_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
  echo "round $round/$rounds: seed $seed, $cases mutations per parser"
  log=$(mktemp)
  rc=0
  FSNN_FUZZ_SEED=$seed FSNN_FUZZ_CASES=$cases \
    cargo test --release -p fsnn --test fuzz -- --nocapture --test-threads 2 >"$log" 2>&1 || rc=$?
  grep -E 'mutations|panicked|failures, first|test result' "$log" || true
  rm -f "$log"
  if [ "$rc" -ne 0 ]; then
    echo "round $round failed: rerun with FSNN_FUZZ_SEED=$seed FSNN_FUZZ_CASES=$cases" >&2
    exit 1
  fi
done
