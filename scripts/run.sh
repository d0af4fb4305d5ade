#!/usr/bin/env bash
# The main job: build the app (release) and serve it at http://127.0.0.1:8080 with the bundled
# demo model and demo collection. Installs its build tools first (wasm32 target, wasm-bindgen-cli,
# trunk). `dist/` is then a plain directory of static files, deployable anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OBSCURA_SETUP=run source scripts/setup.sh
echo "Obscura: building the app; it will be served at http://127.0.0.1:${PORT:-8080}/"
exec trunk serve --release --port "${PORT:-8080}" "$@"
