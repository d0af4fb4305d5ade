#!/usr/bin/env bash
# Every test: native (CPU backend and wgpu on Vulkan/lavapipe, golden comparisons with
# transformers, CLI; the index's property and recall tests), then the wasm32 builds: the index
# under Node, the model in headless Chromium (WebGPU on SwiftShader and the CPU backend). One dev
# profile (dependencies and the index at opt-level 3) for everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

start=$(date +%s)
echo "== native tests"
cargo test --workspace

export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
echo "== index on wasm32 (Node): graph builds, search, save/load"
cargo test -p index --target wasm32-unknown-unknown --test web

echo "== browser tests (headless Chromium: WebGPU on SwiftShader, and the CPU backend)"
export CHROMEDRIVER=/usr/bin/chromedriver
export WASM_BINDGEN_TEST_TIMEOUT=600
# wasm-bindgen-test-runner reads model-wasm/webdriver.json (Chromium's WebGPU flags).
cargo test -p model-wasm --target wasm32-unknown-unknown --test web
echo "all tests passed in $(( $(date +%s) - start )) s"
