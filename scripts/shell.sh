#!/usr/bin/env bash
# trunk post-build step (scripts/post-build.sh), after csp-boot.sh, threads.sh and compress.sh: the service worker.
# Lists the app shell (every file of the build but the models' files, the samples and the wasm files
# whose gzip copies the loaders fetch; the catalog included),
# names this deploy by a hash of those files, and writes sw.js from app/sw/sw.js with both.
# boot.js then waits for app/sw/register.js before it starts the app (see register.js: the one
# reload that makes the page cross-origin isolated on hosts without COOP/COEP headers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${TRUNK_STAGING_DIR:?run by trunk as a post_build hook}"
cp app/sw/register.js "$dir/sw-register.js"
boot="$dir/boot.js"
grep -q sw-register "$boot" || perl -0777 -pi -e 's{^}{import { ready } from "./sw-register.js";\nawait ready;\n}' "$boot"
python3 - "$dir" app/sw/sw.js <<'PY'
import hashlib, json, os, sys
root, template = sys.argv[1], sys.argv[2]
shell = []
for base, dirs, files in os.walk(root):
    for f in files:
        path = os.path.relpath(os.path.join(base, f), root).replace(os.sep, "/")
        top = path.split("/")[0]
        if path in ("sw.js", "README.md") or (top in ("models", "samples") and path != "models/catalog.json"):
            continue
        # A worker's wasm that has a gzip copy (scripts/compress.sh): its loader fetches the copy.
        if os.path.exists(os.path.join(root, path + ".gz")):
            continue
        shell.append(path)
shell.sort()
h = hashlib.sha256()
for path in shell:
    h.update(path.encode() + b"\0" + hashlib.sha256(open(os.path.join(root, path), "rb").read()).digest())
version = h.hexdigest()[:16]
sw = open(template).read().replace("__VERSION__", version).replace("__SHELL__", json.dumps(shell))
open(os.path.join(root, "sw.js"), "w").write(sw)
print(f"shell: {len(shell)} files, {sum(os.path.getsize(os.path.join(root, p)) for p in shell)} bytes, version {version}")
PY
