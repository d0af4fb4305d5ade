#!/usr/bin/env bash
# trunk post-build step (scripts/post-build.sh): the threaded CPU worker. The same worker crate as trunk's `worker` bin,
# built without wgpu (`--no-default-features --features threads`) by the pinned nightly with wasm
# atomics and a rebuilt std (`-Z build-std`), bound with wasm-bindgen `--target web` (what
# wasm-bindgen-rayon needs), into `worker-threads/`, with its loader `worker-threads.js`. The page names it in a
# <meta name="obscura-threads"> and starts it when it is cross-origin isolated (app/src/ui/spawn.rs).
#
# Same profile as trunk's build (dev in tests, release for run.sh); its own target dir, since the
# nightly compiler and flags share no artefacts with the stable build. OBSCURA_THREADS=0 skips it
# (the page then runs the one-thread CPU path where it has no WebGPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${TRUNK_STAGING_DIR:?run by trunk as a post_build hook}"
[ "${OBSCURA_THREADS:-1}" = 0 ] && { echo "threads: skipped (OBSCURA_THREADS=0)"; exit 0; }
source scripts/toolchain.sh

profile=debug
flags=()
if [ "${TRUNK_PROFILE:-debug}" = release ]; then profile=release; flags+=(--release); fi
# Since rust-lang/rust#147225 the linker no longer infers shared memory from +atomics: ask for it,
# import it (wasm-bindgen-rayon hands the one memory to every thread), and export the TLS symbols
# wasm-bindgen's thread transform needs. 4 GiB: a shared memory must declare its maximum, and a
# full-size model plus a batch in flight needs more than a 2 GiB cap would leave.
link=(--shared-memory --import-memory --max-memory=4294967296
  --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base)
rustflags="--cfg getrandom_backend=\"wasm_js\" -C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128"
for a in "${link[@]}"; do rustflags+=" -C link-arg=$a"; done

echo "threads: building the threaded CPU worker ($profile, $OBSCURA_NIGHTLY)"
RUSTFLAGS="$rustflags" cargo "+$OBSCURA_NIGHTLY" build -q -p app --bin worker --no-default-features --features threads \
  --target wasm32-unknown-unknown -Z build-std=std,panic_abort --target-dir target/threads "${flags[@]}"

out="$dir/worker-threads"
rm -rf "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" --out-name worker \
  "target/threads/wasm32-unknown-unknown/$profile/worker.wasm"
if [ "$profile" = release ]; then
  # The same wasm-opt as trunk's (binaryen from npm, scripts/setup.sh), with the threads feature on.
  wasm-opt -Os --enable-threads --enable-bulk-memory --enable-simd --enable-mutable-globals --enable-sign-ext \
    --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue \
    "$out/worker_bg.wasm" -o "$out/worker_bg.wasm"
fi
# The loader sits at the root, beside the other worker's, so that the worker resolves the page's
# relative URLs (models/…) as the page does.
cp app/threads-loader.js "$dir/worker-threads.js"
# The page finds the loader through this tag (relative, like the rest of dist/).
perl -0777 -pi -e 's{</head>}{<meta name="obscura-threads" content="./worker-threads.js">\n</head>}' "$dir/index.html"
echo "threads: $(du -b "$out/worker_bg.wasm" | cut -f1) bytes of wasm"
