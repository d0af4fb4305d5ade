#!/usr/bin/env bash
# The app measured end to end (bench/bench_app.mjs): the release build run.sh serves (wasm-opt,
# the threaded worker), on the demo model and the demo collection, and on a full-size random
# ViT-B/32 (the weights bench/bench_tjs.sh gives transformers.js: bench/tjs/export.py's
# checkpoint, converted to q8 by weights-tool as a user would), each with the threaded CPU
# worker at 1 and 2 threads, the one-thread worker and WebGPU (SwiftShader). Prints Markdown.
#
#     bash bench/bench_app.sh [N_FULL]        # N_FULL images for the full-size model (32)
#
# Needs the reference venv (PY, default /tmp/ref: torch + transformers + onnx) once for the
# checkpoint, and what scripts/setup.sh installs. Not part of CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
PY=${PY:-/tmp/ref/bin/python}
out=target/bench-app
mkdir -p "$out"
trunk build --release --dist "$out/dist-demo"
[ -f target/tjs/checkpoint/model.safetensors ] || "$PY" bench/tjs/export.py target/tjs
# The CLI the test suite builds (dependencies at opt-level 3), else a release one.
tool=target/debug/weights-tool
[ -x "$tool" ] || { tool=target/release/weights-tool; [ -x "$tool" ] || cargo build --release -q -p weights-tool; }
[ -f "$out/vitb32/manifest.json" ] || "$tool" convert target/tjs/checkpoint --out "$out/vitb32" --dtype q8
rm -rf "$out/dist-full" && cp -r "$out/dist-demo" "$out/dist-full"
rm -rf "$out/dist-full/models" && mkdir -p "$out/dist-full/models" && cp -r "$out/vitb32" "$out/dist-full/models/vitb32"
"$tool" catalog "$out/dist-full/models" >/dev/null
node bench/bench_app.mjs --dist "$out/dist-demo" --images public/samples --n 200 --label "Demo model (q8, 96 px), the 200-tile demo collection"
node bench/bench_app.mjs --dist "$out/dist-full" --images public/samples --n "${1:-32}" --label "Full-size random ViT-B/32 (q8 download, f32 compute, 224 px)"
