#!/usr/bin/env bash
# transformers.js (npm @huggingface/transformers, pinned in bench/tjs/package.json) encoding
# images with a full-size random CLIP ViT-B/32 (the weights of bench_browser.sh / bench_clip.py)
# in headless Chromium, in a dedicated Web Worker, batch 8, end to end (preprocessing + model):
# wasm with 1 and 2 threads (page cross-origin isolated), fp32 and q8, and WebGPU (SwiftShader).
#
#     bash bench/bench_tjs.sh                      # all six configurations → Markdown table
#     bash bench/bench_tjs.sh --configs wasm-q8-1 --iters 1   # any of run.mjs' options
#
# Needs the reference venv at $PY or /tmp/ref (torch, transformers, onnx, onnxruntime,
# onnxscript), node + npm and /usr/bin/chromium. Models go to target/tjs (made once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-/tmp/ref/bin/python}
OUT=${TJS_OUT:-target/tjs}
[ -f "$OUT/tjs/clip-vit-b32-random/onnx/vision_model_quantized.onnx" ] || "$PY" bench/tjs/export.py "$OUT"
[ -d bench/tjs/node_modules/playwright-core ] || (cd bench/tjs && npm ci)  # .npmrc: no install scripts
exec node bench/tjs/run.mjs --models "$OUT/tjs" "$@"
