#!/usr/bin/env bash
# Everything the test suite needs beyond Rust, on Debian bookworm: Mesa's software Vulkan driver
# (lavapipe, for machines without a GPU driver), Node, npm and spirv-tools for the portability
# test, and Dawn's Node bindings (the npm package `webgpu`, pinned so that a new Dawn cannot change
# what the test proves unannounced) into target/portability. The apt steps need root: run it as
# root, or it asks sudo for them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo); fi
"${as_root[@]}" bash .ci/install-lavapipe.sh
"${as_root[@]}" bash .ci/install-portability.sh
npm install --no-save --no-audit --no-fund --ignore-scripts --prefix target/portability webgpu@0.6.2 >/dev/null
