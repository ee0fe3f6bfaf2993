#!/usr/bin/env bash
# Installs what tests/portability.rs needs beyond Rust and lavapipe: Node and npm (to run Dawn, the
# WebGPU of Chrome and Edge, through the npm package `webgpu`) and spirv-tools (`spirv-val`).
# Needs root. Tools already on the machine are kept.
set -euo pipefail

need=()
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v spirv-val >/dev/null || need+=(spirv-tools)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  # Debian's npm comes as a few hundred small packages: unsafe-io spares dpkg an fsync for each.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-unsafe-io "${need[@]}" >/dev/null
fi
for t in node npm spirv-val; do
  command -v "$t" >/dev/null || { echo "install-portability: $t not found after install" >&2; exit 1; }
done
