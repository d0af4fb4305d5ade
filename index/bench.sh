#!/usr/bin/env bash
# The index benchmark natively (one thread, like the browser) and in wasm (simd128, V8 via
# Node's WASI), one after the other in one run, into index/bench-results.md.
# Usage: bash index/bench.sh [sizes…]   (default: 10000 100000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sizes=("${@:-10000}")
[ $# -eq 0 ] && sizes=(10000 100000)
rustup target add wasm32-wasip1 >/dev/null
cargo build --release -p index --example bench
cargo build --release -p index --example bench --target wasm32-wasip1
out=index/bench-results.md
{
  echo "# index benchmark, $(date -u +%F), $(nproc) cores, $(node --version)"
  echo
  echo "## native, RAYON_NUM_THREADS=1"
  RAYON_NUM_THREADS=1 target/release/examples/bench "${sizes[@]}"
  echo
  echo "## wasm32-wasip1 (+simd128) in Node (V8)"
  node --no-warnings index/bench-wasi.mjs target/wasm32-wasip1/release/examples/bench.wasm "${sizes[@]}"
} | tee "$out"
