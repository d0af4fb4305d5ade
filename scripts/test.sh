#!/usr/bin/env bash
# Every test: native (CPU backend and wgpu on Vulkan/lavapipe, golden comparisons with
# transformers, the demo model, CLI; the index's property and recall tests), then the wasm32
# builds: the index under Node, the model in headless Chromium (WebGPU on SwiftShader and the CPU
# backend), and the app itself driven in Chromium, once on WebGPU and once without it. One dev
# profile (dependencies and the index at opt-level 3) for everything, the app's build included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

start=$(date +%s)
# One clean build: incremental caches would only add gigabytes to the target dir.
export CARGO_INCREMENTAL=0
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
echo "== the app in headless Chromium (trunk build, then WebGPU on SwiftShader, the threaded CPU worker on an isolated page, the one-thread worker on a page that is not)"
# trunk's hooks build the threaded worker (nightly) and the service worker too (Trunk.toml).
trunk build
mkdir -p target/browser
classes=$(sed -n 's/.*"class": "\(.*\)".*/\1/p' public/samples/manifest.json | sort -u)
texts=()
while IFS= read -r c; do texts+=(--text "an H&E image of $c."); done <<< "$classes"
# The binary `cargo test --workspace` built (`cargo run -p weights-tool` would resolve features for
# that package alone and rebuild half the tree).
target/debug/weights-tool embed --model public/models/demo --backend cpu --image public/samples \
  --slide tests/slides/data/tumour.svs "${texts[@]}" > target/browser/native.json
node tests/browser/app.test.mjs --dist dist --native target/browser/native.json --backend webgpu
node tests/browser/app.test.mjs --dist dist --native target/browser/native.json --backend cpu --isolation headers
node tests/browser/app.test.mjs --dist dist --native target/browser/native.json --backend cpu --isolation none
echo "== offline: a host without COOP/COEP, the service worker's isolation, a second visit, an offline reload, a new deploy"
OBSCURA_DEV_BUILD=1 node tests/browser/offline.test.mjs --dist dist --native target/browser/native.json
echo "== the teaching lab in Chromium (class folders and a CSV, against weights-tool eval on the same folder)"
node tests/browser/lab.test.mjs --prepare target/browser/lab
for layout in folders flat; do
  target/debug/weights-tool eval --model public/models/demo --backend cpu --labelled "target/browser/lab/$layout" --probe > "target/browser/lab/$layout.json"
done
node tests/browser/lab.test.mjs --dist dist --set target/browser/lab --native target/browser/lab/folders.json \
  --native-flat target/browser/lab/flat.json --backend cpu
echo "== adding models from this computer, in Chromium (converted in the tab, against weights-tool embed)"
mkdir -p target/browser/models
# A random 256-wide checkpoint as model.safetensors and pytorch_model.bin (the example cargo test built).
target/debug/examples/random_clip target/browser/models/w256 w256 both
images=(tests/golden/images/{photo-120x90.jpg,rgba-64x48.png,odd-37x23.png,grey-50x70.png})
printf -v image_args -- '--image %s ' "${images[@]}"
# shellcheck disable=SC2086
for pair in hf-safetensors:target/browser/models/w256 hf-bin:target/browser/models/w256 openclip:tests/golden/models/tiny-openclip; do
  target/debug/weights-tool embed --model "${pair#*:}" --backend cpu $image_args > "target/browser/models/${pair%%:*}.json"
done
node tests/browser/models.test.mjs --dist dist --native target/browser/models
echo "all tests passed in $(( $(date +%s) - start )) s"
