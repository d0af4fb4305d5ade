#!/usr/bin/env bash
# Slide reader bench (not run by CI): writes a ~2 GB SVS-like BigTIFF (never committed), then
# measures natively, in one run: opening, the tissue plan, patches/s for reading alone and for
# reading + embedding with the demo model on the CPU, and peak memory; the same on the committed
# tumour.svs. Results go to tests/slides/bench-results.md.
#
#   bash tests/slides/bench.sh [GB]      (needs python3 -m venv + pip: numpy scipy pillow tifffile imagecodecs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
gb=${1:-2}
venv=target/slide-bench/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy scipy pillow tifffile imagecodecs
fi
big=target/slide-bench/big.svs
[ -f "$big" ] || "$venv/bin/python" tests/slides/generate.py --big "$big" "$gb"
# The dev profile the tests and the app's dev build use (dependencies at opt-level 3).
cargo build -q -p model-wasm --example slide_bench
out=tests/slides/bench-results.md
{
  echo "# Slide reader bench ($(date -u +%Y-%m-%d), $(nproc) cores: the reader on one thread, the CPU encoder on all)"
  echo
  echo '```'
  target/debug/examples/slide_bench "$big" public/models/demo 20000
  echo
  target/debug/examples/slide_bench tests/slides/data/tumour.svs public/models/demo 20000
  echo '```'
} | tee "$out"
