#!/usr/bin/env bash
# trunk post-build step (scripts/post-build.sh), after threads.sh, before shell.sh: gzip copies of
# the two worker builds' wasm, which their loaders fetch and inflate (app/inflate.js). The
# uncompressed files stay for browsers without DecompressionStream; the service worker's shell
# lists only the copies. Release builds compress hardest (gzip -9); dev builds fast (-1), so that
# the test suite runs the same loaders.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${TRUNK_STAGING_DIR:?run by trunk as a post_build hook}"
level=1
[ "${TRUNK_PROFILE:-debug}" = release ] && level=9
cp app/inflate.js "$dir/inflate.js"
for wasm in "$dir/worker_bg.wasm" "$dir/worker-threads/worker_bg.wasm"; do
  [ -f "$wasm" ] || continue
  gzip -n -"$level" -c "$wasm" > "$wasm.gz"
  echo "compress: ${wasm#"$dir"/} $(du -b "$wasm" | cut -f1) -> $(du -b "$wasm.gz" | cut -f1) bytes"
done
# trunk's loader for the WebGPU/one-thread worker: importScripts("./worker.js");wasm_bindgen("./worker_bg.wasm");
loader="$dir/worker_loader.js"
grep -q 'wasm_bindgen("./worker_bg.wasm")' "$loader" || { echo "compress: unexpected $loader: $(cat "$loader")" >&2; exit 1; }
perl -pi -e 's{importScripts\("./worker.js"\);wasm_bindgen\("./worker_bg.wasm"\);}{importScripts("./worker.js", "./inflate.js");wasm_bindgen(obscuraWasm("./worker_bg.wasm.gz"));}' "$loader"
grep -q obscuraWasm "$loader" || { echo "compress: could not rewrite $loader" >&2; exit 1; }
