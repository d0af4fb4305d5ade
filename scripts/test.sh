#!/usr/bin/env bash
# Every test: native (CPU backend and wgpu on Vulkan/lavapipe, golden comparisons with
# transformers, CLI), then the wasm32 build in headless Chromium (WebGPU on SwiftShader and the
# CPU backend). One dev profile (dependencies at opt-level 3) for everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

start=$(date +%s)
echo "== native tests"
cargo test --workspace

echo "== browser tests (headless Chromium: WebGPU on SwiftShader, and the CPU backend)"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER=/usr/bin/chromedriver
export WASM_BINDGEN_TEST_TIMEOUT=600
# wasm-bindgen-test-runner reads model-wasm/webdriver.json (Chromium's WebGPU flags).
cargo test -p model-wasm --target wasm32-unknown-unknown --test web
echo "all tests passed in $(( $(date +%s) - start )) s"
