#!/usr/bin/env bash
# Writes index/tests/data/demo-embeddings.f32: the 200 demo tiles (public/samples) through the demo
# model on the CPU backend, as 200 x 64 little-endian f32, in file-name order. Not run by CI (the
# file is committed); rerun when the demo model or collection changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
cargo build -q -p weights-tool
target/debug/weights-tool embed --model public/models/demo --backend cpu --image public/samples |
  python3 -c '
import json, struct, sys
images = sorted(json.load(sys.stdin)["images"], key=lambda i: i["path"])
assert len(images) == 200 and all(len(i["embedding"]) == 64 for i in images)
sys.stdout.buffer.write(b"".join(struct.pack("<64f", *i["embedding"]) for i in images))
' > index/tests/data/demo-embeddings.f32
