#!/usr/bin/env python3
"""Quantized weights, full size: ViT-B/32 CLIP with random weights (transformers' init,
openai/clip-vit-base-patch32's config values) converted by `weights-tool convert` to f32, f16, q8
and q4, next to PyTorch fp32 and PyTorch dynamic int8 (Linear layers), in one run:
bytes per dtype, convert and load time, encode time, and fidelity (cosine to PyTorch fp32 on the
golden images, as Obscura preprocesses them, and the golden texts).

    python bench/bench_quant.py [--repeats 3] [--no-gpu]

Then, unless --no-gpu, the wgpu backend on the machine's adapter (lavapipe on a machine without a
GPU) in f32 and f16 compute on the f32 and q4 weights: fidelity, resident memory after load (on a
CPU adapter the device buffers live in the process) and encode time at batch 1.

Needs torch + transformers (the venv of tests/golden/generate.py). Prints Markdown tables.
"""
import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests/golden"
TOOL = ROOT / "target/release/weights-tool"
DTYPES = ["f32", "f16", "q8", "q4"]


def run(*args):
    out = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{args[:2]} failed:\n{out.stderr}")
    return out.stdout


def embed(model_dir, pixels_out=None, backend="cpu"):
    args = [TOOL, "embed", "--backend", backend, "--model", model_dir, "--image", GOLDEN / "images"]
    for t in TEXTS:
        args += ["--text", t]
    if pixels_out:
        args += ["--pixels-out", pixels_out]
    out = json.loads(run(*args))
    return ([np.array(i["embedding"]) for i in out["images"]], [i["path"] for i in out["images"]],
            [np.array(t["embedding"]) for t in out["texts"]], [t["input_ids"] for t in out["texts"]])


def cos(a, b):
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def image_features(m, px):
    return m.visual_projection(m.vision_model(pixel_values=px).pooler_output)


def text_features(m, ids):
    return m.text_projection(m.text_model(input_ids=ids).pooler_output)


def timed(fn, repeats, batch):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000 / batch)
    return sorted(times)[len(times) // 2]


def main():
    global TEXTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-gpu", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    TEXTS = [t["text"] for t in json.loads((GOLDEN / "tiny-quickgelu-eos2.json").read_text())["texts"]]
    run("cargo", "build", "-q", "--release", "-p", "weights-tool")
    run("cargo", "build", "-q", "--release", "-p", "model-wasm", "--example", "encode_bench")

    tmp = Path(tempfile.mkdtemp())
    ckpt = tmp / "ckpt"
    config = CLIPConfig(text_config=dict(eos_token_id=2, bos_token_id=0, pad_token_id=1),
                        vision_config=dict(), projection_dim=512)
    model = CLIPModel(config).eval()
    model.save_pretrained(ckpt)
    CLIPImageProcessor().save_pretrained(ckpt)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(GOLDEN / "models/tiny-quickgelu-eos2" / f, ckpt / f)
    fp32_bytes = (ckpt / "model.safetensors").stat().st_size

    # Obscura's preprocessing (equal to transformers' within 1e-5) feeds every model, so the
    # comparison is about the weights alone.
    _, paths, _, ids = embed(ckpt, pixels_out=tmp / "px")
    pixels = torch.from_numpy(np.stack([np.load(tmp / "px" / (Path(p).stem + ".npy")) for p in paths]))
    input_ids = torch.tensor(ids)
    int8 = torch.ao.quantization.quantize_dynamic(CLIPModel.from_pretrained(ckpt).eval(), {torch.nn.Linear},
                                                  dtype=torch.qint8)
    with torch.no_grad():
        ref_img = image_features(model, pixels).numpy()
        ref_txt = text_features(model, input_ids).numpy()
        q_img = image_features(int8, pixels).numpy()
        q_txt = text_features(int8, input_ids).numpy()

    rows = []
    speed = {}
    with torch.no_grad():
        for name, m in [("pytorch fp32", model), ("pytorch dynamic int8", int8)]:
            speed[name] = {
                "image b1": timed(lambda: image_features(m, pixels[:1]), args.repeats, 1),
                "image b8": timed(lambda: image_features(m, pixels[:8]), args.repeats, 8),
                "text b1": timed(lambda: text_features(m, input_ids[:1]), args.repeats, 1),
                "text b8": timed(lambda: text_features(m, input_ids[:8]), args.repeats, 8),
            }
    rows.append(("pytorch fp32 (safetensors)", fp32_bytes, None, None, 1.0, 1.0, 1.0, 1.0))
    rows.append(("pytorch dynamic int8", None, None, None,
                 min(cos(a, b) for a, b in zip(q_img, ref_img)), np.mean([cos(a, b) for a, b in zip(q_img, ref_img)]),
                 min(cos(a, b) for a, b in zip(q_txt, ref_txt)), np.mean([cos(a, b) for a, b in zip(q_txt, ref_txt)])))
    for dtype in DTYPES:
        out = tmp / dtype
        start = time.perf_counter()
        run(TOOL, "convert", ckpt, "--out", out, "--dtype", dtype)
        convert_s = time.perf_counter() - start
        manifest = json.loads((out / "manifest.json").read_text())
        size = sum(s["bytes"] for s in manifest["shards"])
        img, _, txt, _ = embed(out)
        lines = [json.loads(l) for l in run(ROOT / "target/release/examples/encode_bench", out, "cpu", args.repeats, "1,8").splitlines()]
        load_ms = lines[0]["load_ms"]
        speed[f"obscura {dtype}"] = {f"{r['tower']} b{r['batch']}": r["median_ms"] for r in lines[1:]}
        rows.append((f"obscura {dtype}", size, convert_s, load_ms,
                     min(cos(a, b) for a, b in zip(img, ref_img)), np.mean([cos(a, b) for a, b in zip(img, ref_img)]),
                     min(cos(a, b) for a, b in zip(txt, ref_txt)), np.mean([cos(a, b) for a, b in zip(txt, ref_txt)])))

    print(f"ViT-B/32, random weights; {len(paths)} images, {len(TEXTS)} texts; fidelity is cosine to PyTorch fp32\n")
    print("| weights | bytes | % of fp32 | convert s | load ms | image cos min / mean | text cos min / mean |")
    print("|---|---|---|---|---|---|---|")
    for name, size, conv, load, imin, imean, tmin, tmean in rows:
        b = f"{size / 1e6:.1f} MB" if size else "—"
        pct = f"{100 * size / fp32_bytes:.1f}%" if size else "—"
        c = f"{conv:.1f}" if conv is not None else "—"
        l = f"{load:.0f}" if load is not None else "—"
        print(f"| {name} | {b} | {pct} | {c} | {l} | {imin:.5f} / {imean:.5f} | {tmin:.5f} / {tmean:.5f} |")
    cols = ["image b1", "image b8", "text b1", "text b8"]
    print("\n| encode ms/item (2 threads) | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, s in speed.items():
        print(f"| {name} | " + " | ".join(f"{s.get(c, float('nan')):.1f}" for c in cols) + " |")

    if not args.no_gpu:
        print("\n| wgpu compute | weights | image cos min / mean | text cos min / mean | RSS after load MB | load ms | image b1 ms | text b1 ms |")
        print("|---|---|---|---|---|---|---|---|")
        for dtype in ["f32", "q4"]:
            for backend in ["wgpu-f32", "wgpu"]:
                out = tmp / dtype
                img, _, txt, _ = embed(out, backend=backend)
                lines = [json.loads(l) for l in run(ROOT / "target/release/examples/encode_bench", out, backend, args.repeats, "1").splitlines()]
                t = {r["tower"]: r["median_ms"] for r in lines[1:]}
                impl = lines[1]["impl"]
                print(f"| {impl} | {dtype} | {min(cos(a, b) for a, b in zip(img, ref_img)):.5f} / {np.mean([cos(a, b) for a, b in zip(img, ref_img)]):.5f} "
                      f"| {min(cos(a, b) for a, b in zip(txt, ref_txt)):.5f} / {np.mean([cos(a, b) for a, b in zip(txt, ref_txt)]):.5f} "
                      f"| {lines[0]['rss_mb']:.0f} | {lines[0]['load_ms']:.0f} | {t['image']:.0f} | {t['text']:.0f} |")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
