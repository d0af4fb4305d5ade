#!/usr/bin/env python3
"""Full-size ViT-B/32 CLIP (random weights, openai/clip-vit-base-patch32's config values):
PyTorch fp32 CPU and Obscura's backends, same weights, same machine, in alternating rounds.

    /tmp/ref/bin/python bench/bench_clip.py [--repeats 3] [--rounds 3] [--backends cpu,wgpu] [--gemm]

--gemm adds a table of matrix-multiply throughput on the model's shapes (batch 8): torch.matmul
against the CPU backend's (model-wasm/examples/gemm_bench.rs), 2 threads each.

Needs torch + transformers (see tests/golden/generate.py). Prints a Markdown table.
"""
import argparse, json, subprocess, tempfile, time
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gemm", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(eos_token_id=2, bos_token_id=0, pad_token_id=1),
        vision_config=dict(),
        projection_dim=512,
    )
    model = CLIPModel(config).eval()
    tmp = Path(tempfile.mkdtemp())
    model.save_pretrained(tmp)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        (tmp / f).write_bytes((ROOT / "tests/golden/models/tiny-quickgelu-eos2" / f).read_bytes())
    # Rounds alternate PyTorch and Obscura, so that a machine that slows down for a while (these
    # are shared VMs) weighs on both sides; each cell is the median over rounds.
    tok = CLIPTokenizerFast.from_pretrained(tmp)
    rounds = [torch_rows(model, tok, args.repeats) + ours_rows(tmp, args) for _ in range(args.rounds)]
    impls = list(dict.fromkeys(r["impl"] for r in rounds[0]))
    cell = lambda rows, i, tower, batch: next((r["median_ms"] for r in rows if r["impl"] == i and
                                               r["tower"] == tower and r["batch"] == batch), float("nan"))
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"{args.rounds} rounds; ms per item: median over rounds of the median of {args.repeats} runs; "
          "ratio: median (lowest-highest) of the rounds' ratios\n")
    print("| tower | batch | " + " | ".join(f"{i} ms/item" for i in impls) + " | " +
          " | ".join(f"{i} / pytorch" for i in impls[1:]) + " |")
    print("|---" * (2 + 2 * len(impls) - 1) + "|")
    for tower in TOWERS:
        for batch in [1, 8, 32]:
            times = {i: [cell(rows, i, tower, batch) for rows in rounds] for i in impls}
            ratios = {i: sorted(t / b for t, b in zip(times[i], times["pytorch-fp32"])) for i in impls[1:]}
            print(f"| {tower} | {batch} | " + " | ".join(f"{med(times[i]):.1f}" for i in impls) + " | " +
                  " | ".join(f"{med(r):.2f}x ({r[0]:.2f}-{r[-1]:.2f})" for r in ratios.values()) + " |")
    if args.gemm:
        gemm()


# "text": the longest text the context allows, 77 tokens on both sides (equal work).
# "prompt": a one-line query. Obscura computes the text tower only up to the pooled token (rounded
# up to 8); PyTorch gets it as `padding=True` (to the longest in the batch) tokenizes it, which
# is the least work transformers can do for it. Same as encode_bench's PROMPT.
TOWERS = ["image", "text", "prompt"]
PROMPT = "an H&E image of poorly differentiated adenocarcinoma."


def torch_rows(model, tok, repeats):
    rows = []
    torch.manual_seed(0)
    with torch.no_grad():
        for batch in [1, 8, 32]:
            px = torch.randn(batch, 3, 224, 224)
            ids = torch.randint(0, 49406, (batch, 77))
            ids[:, -1] = 49407
            prompt = tok([PROMPT] * batch, padding=True, return_tensors="pt").input_ids
            for tower, fn in [("image", lambda: model.get_image_features(pixel_values=px)),
                              ("text", lambda: model.get_text_features(input_ids=ids)),
                              ("prompt", lambda: model.get_text_features(input_ids=prompt))]:
                fn()
                times = []
                for _ in range(repeats):
                    t = time.perf_counter(); fn(); times.append((time.perf_counter() - t) * 1000 / batch)
                times.sort()
                rows.append({"impl": "pytorch-fp32", "tower": tower, "batch": batch,
                             "median_ms": times[len(times) // 2], "min_ms": times[0]})
    return rows


def ours_rows(ckpt, args):
    rows = []
    for backend in args.backends.split(","):
        out = subprocess.run(["cargo", "run", "-q", "--release", "-p", "model-wasm", "--example", "encode_bench", "--",
                              str(ckpt), backend, str(args.repeats), "1,8,32", ",".join(TOWERS)], cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr)
            continue
        rows += [r for r in (json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")) if "impl" in r]
    return rows


def gemm(repeats=20):
    out = subprocess.run(["cargo", "run", "-q", "--release", "-p", "model-wasm", "--example", "gemm_bench", "--",
                          str(repeats)], cwd=ROOT, capture_output=True, text=True, check=True)
    ours = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    name = ours[0]["impl"]
    print(f"\n| shape (batch 8) | torch.matmul GFLOP/s | {name} GFLOP/s | {name} / torch |")
    print("|---|---|---|---|")
    with torch.no_grad():
        for r in ours:
            a = torch.randn(r["batch"], r["m"], r["k"])
            b = torch.randn(r["batch"], r["k"], r["n"])
            torch.matmul(a, b)
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter(); torch.matmul(a, b); best = min(best, time.perf_counter() - t)
            theirs = 2 * r["batch"] * r["m"] * r["k"] * r["n"] / best / 1e9
            print(f"| {r['shape']} | {theirs:.1f} | {r['gflops']:.1f} | {r['gflops'] / theirs:.2f}x |")


if __name__ == "__main__":
    main()
