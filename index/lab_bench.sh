#!/usr/bin/env bash
# The teaching lab's map benchmark, natively then in wasm (simd128, V8 through Node's WASI), one
# thread each, in one run, into index/lab-bench-results.md. Not run by CI.
# Usage: bash index/lab_bench.sh [points…]   (default: 2000 10000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sizes=("$@")
[ $# -eq 0 ] && sizes=(2000 10000)
rustup target add wasm32-wasip1 >/dev/null
cargo build --release -p index --example lab_bench
cargo build --release -p index --example lab_bench --target wasm32-wasip1
{
  echo "# lab map benchmark, $(date -u +%F), $(nproc) cores, Node $(node --version)"
  echo
  echo "## native, one thread"
  target/release/examples/lab_bench "${sizes[@]}"
  echo
  echo "## wasm32-wasip1 (+simd128) in Node (V8)"
  node --no-warnings index/bench-wasi.mjs target/wasm32-wasip1/release/examples/lab_bench.wasm "${sizes[@]}"
} | tee index/lab-bench-results.md
