#!/usr/bin/env bash
# trunk's one post-build hook (trunk runs the hooks of a stage concurrently; these must run in
# order): boot.js out of index.html (CSP), then the threaded CPU worker beside the app, then gzip
# copies of both workers' wasm, then the service worker, whose shell lists what those wrote.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/csp-boot.sh
bash scripts/threads.sh
bash scripts/compress.sh
bash scripts/shell.sh
