#!/usr/bin/env bash
# Encode time in headless Chromium: full-size ViT-B/32 CLIP (random weights, transformers' init,
# openai/clip-vit-base-patch32's config values) at batch 1, 8 and 32 — Obscura's model on WebGPU
# (SwiftShader: WebGPU on the CPU) and on its CPU backend (burn-flex), and candle's CLIP
# (candle-transformers) on the CPU, in one page, on the same weights and inputs
# (bench/browser/tests/encode.rs), then Obscura's native CPU backend on the same weights.
# Towers: image, text (77 tokens) and, on the CPUs, prompt (a 15-token query).
#
#     bash bench/bench_browser.sh        # → Markdown tables on stdout
#
# Needs the reference venv (tests/golden/generate.py: torch + transformers) at $PY or /tmp/ref,
# and what scripts/setup.sh installs. Builds bench/browser (release, wasm32; not part of the
# workspace or CI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-/tmp/ref/bin/python}
PORT=${PORT:-8123}
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

"$PY" - "$work/ckpt" <<'PY'
import shutil, sys
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
torch.manual_seed(0)
out = sys.argv[1]
config = CLIPConfig(text_config=dict(eos_token_id=2, bos_token_id=0, pad_token_id=1), vision_config=dict(), projection_dim=512)
CLIPModel(config).eval().save_pretrained(out)
CLIPImageProcessor().save_pretrained(out)
for f in ["tokenizer.json", "tokenizer_config.json"]:
    shutil.copy(f"tests/golden/models/tiny-quickgelu-eos2/{f}", out)
PY

# A static server that lets the test page (another port: wasm-bindgen-test-runner's) read it.
python3 - "$work/ckpt" "$PORT" <<'PY' &
import functools, http.server, sys
class Cors(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), functools.partial(Cors, directory=sys.argv[1])).serve_forever()
PY
server=$!

export OBSCURA_BENCH_URL="http://127.0.0.1:$PORT"
# OBSCURA_BENCH_SKIP_WEBGPU=1 leaves WebGPU out (on SwiftShader it alone takes ~40 min);
# OBSCURA_BENCH_WEBGPU_BATCH32=1 runs WebGPU at batch 32 alone (one run per tower, ~35 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export CHROMEDRIVER=/usr/bin/chromedriver
export WASM_BINDGEN_TEST_TIMEOUT=3600
(cd bench/browser && cargo test --release --target wasm32-unknown-unknown --test encode -- --nocapture) > "$work/browser.log" 2>&1 \
  || { cat "$work/browser.log"; exit 1; }
cargo build -q --release -p model-wasm --example encode_bench
"$CARGO_TARGET_DIR"/release/examples/encode_bench "$work/ckpt" cpu 2 1,8,32 image,text,prompt | sed 's/"impl": "obscura-cpu"/"impl": "obscura-cpu (native)"/' > "$work/native.log"

"$PY" - "$work/browser.log" "$work/native.log" <<'PY'
import json, os, re, sys
rows, loads, checks = {}, {}, []
for path in sys.argv[1:]:
    for line in open(path):
        m = re.search(r"\{.*\}", line)
        if not m:
            continue
        try:
            r = json.loads(m.group(0))
        except ValueError:
            continue
        if "check" in r:
            checks.append(r)
        elif "load_ms" in r and "impl" in r:
            loads[r["impl"]] = f"{r['load_ms']} ({r['fetch_ms']} fetch)" if "fetch_ms" in r else r["load_ms"]
        elif "median_ms" in r:
            rows.setdefault(r["impl"], {})[f"{r['tower']} b{r['batch']}"] = r["median_ms"]
cols = [f"{t} b{b}" for t in ["image", "text", "prompt"] for b in [1, 8, 32]]
runs = "one run after a batch-1 warm-up" if "OBSCURA_BENCH_WEBGPU_BATCH32" in os.environ else "median of 2 after a warm-up"
print(f"| ms per item ({runs}) | " + " | ".join(cols) + " | load ms |")
print("|---" * (len(cols) + 2) + "|")
for impl, r in rows.items():
    print(f"| {impl} | " + " | ".join(f"{r.get(c, float('nan')):.0f}" for c in cols) + f" | {loads.get(impl, '—')} |")
if "obscura-cpu" in rows and "candle-cpu" in rows:
    print("\n| candle-cpu / obscura-cpu (wasm) | " + " | ".join(f"{rows['candle-cpu'].get(c, float('nan')) / rows['obscura-cpu'].get(c, float('nan')):.2f}x" for c in cols) + " |")
for c in checks:
    print(f"\n{c['check']}: cosine of features, image {c['image_cos']}, text {c['text_cos']}")
PY
