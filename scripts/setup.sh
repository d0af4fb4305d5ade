#!/usr/bin/env bash
# Installs what Obscura's build and tests need on a fresh Debian machine, idempotently:
# the wasm32 target, wasm-bindgen-cli at the version in Cargo.lock and trunk (the app's build),
# the pinned nightly with rust-src (the threaded CPU worker), binaryen's wasm-opt from npm
# (release builds; Debian's is too old),
# Chromium + chromedriver (WebGPU on SwiftShader for browser tests), Mesa's lavapipe (a Vulkan
# adapter for the native wgpu tests), Node.js if missing (the index's wasm test, the app's
# browser test) and playwright-core (that test's driver). Sourced by test.sh, and by run.sh with
# OBSCURA_SETUP=run (the build tools only: no browsers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
if [ "${OBSCURA_SETUP:-test}" = test ]; then
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
fi
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
source scripts/toolchain.sh

# wasm-opt for trunk's release builds and the threaded worker's (Trunk.toml pins its version).
if [ ! -x scripts/tools/node_modules/.bin/wasm-opt ]; then
  echo "setup: installing binaryen (wasm-opt) from npm"
  (cd scripts/tools && npm ci --no-audit --no-fund --loglevel=error)
fi
export PATH="$PWD/scripts/tools/node_modules/.bin:$PATH"

# wasm-bindgen's CLI must match the wasm-bindgen crate exactly; `--locked` fails on this registry.
wb_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  echo "setup: installing wasm-bindgen-cli $wb_version"
  cargo install -q wasm-bindgen-cli --version "$wb_version"
fi

# trunk builds the app; 0.22 needs a newer rustc than this toolchain. trunk looks for
# wasm-bindgen on PATH (installed above) and never downloads it.
if [ "$(trunk --version 2>/dev/null | awk '{print $2}')" != "0.21.14" ]; then
  echo "setup: installing trunk 0.21.14"
  cargo install -q --locked trunk@0.21.14
fi

if [ "${OBSCURA_SETUP:-test}" = test ] && [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "setup: installing playwright-core (the app's browser test drives Debian's Chromium with it)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
