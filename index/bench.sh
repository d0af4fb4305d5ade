#!/usr/bin/env bash
# The index benchmark, one after the other in one run, into index/bench-results.md:
#  1. natively, one thread (like the browser),
#  2. in wasm (simd128, V8 through Node's WASI),
#  3. the peers, hnswlib and faiss (one thread), on the very same vectors and queries.
# Usage: [BENCH_DISTS=mixture,uneven,sphere,real] bash index/bench.sh [sizes…]   (default: 100000).
# Installs the wasm32-wasip1 target and a Python venv with numpy, faiss-cpu and hnswlib under
# target/ if missing. Not run by CI (a 100k run takes about half an hour on 2 cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sizes=("$@")
[ $# -eq 0 ] && sizes=(100000)
export BENCH_DISTS="${BENCH_DISTS:-mixture,uneven,sphere,real}"
rustup target add wasm32-wasip1 >/dev/null
cargo build --release -p index --example bench
cargo build --release -p index --example bench --target wasm32-wasip1
venv=target/bench-peers
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy faiss-cpu hnswlib
fi
data=target/bench-data
mkdir -p "$data"
out=${BENCH_OUT:-index/bench-results.md}
{
  echo "# index benchmark, $(date -u +%F), $(nproc) cores, Node $(node --version)"
  echo
  echo "## Obscura index, native, RAYON_NUM_THREADS=1"
  BENCH_EXPORT="$data" RAYON_NUM_THREADS=1 target/release/examples/bench "${sizes[@]}"
  echo
  echo "## Obscura index, wasm32-wasip1 (+simd128) in Node (V8)"
  # (Node 20 has been seen to crash on exit after a run that grew wasm memory past 2 GB, with all
  # output written: go on to the peers.)
  node --no-warnings index/bench-wasi.mjs target/wasm32-wasip1/release/examples/bench.wasm "${sizes[@]}" ||
    echo "(node exited with status $?)"
  echo
  echo "## Peers, native, 1 thread"
  OMP_NUM_THREADS=1 "$venv/bin/python" index/bench_peers.py "$data" "$BENCH_DISTS" "${sizes[@]}"
} | tee "$out"
