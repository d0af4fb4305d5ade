#!/usr/bin/env python3
"""Which tensors of ViT-B/32 CLIP need more than 4 bits: quantizes every matrix of one tower to q4
(NF4 levels, one f16 scale per block, the least-squares scale search of `weights-tool convert`,
reimplemented here in torch and equal to it: the all-q4 row reproduces bench_quant.py's numbers)
and then puts one group of tensors at a time in q8, reporting the min / mean cosine to fp32 over
the 18 golden images and the 32 golden texts, and the tower's quantized bytes.

    python bench/q4_sensitivity.py

Random weights with transformers' init and openai/clip-vit-base-patch32's config values (the same
model, seed 0, as bench_quant.py). Needs the venv of tests/golden/generate.py. Prints Markdown.
"""
import glob
import json
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

GOLDEN = Path(__file__).resolve().parent.parent / "tests/golden"
LEVELS = torch.tensor([-1.0, -0.6961928, -0.52507305, -0.3949175, -0.28444138, -0.18477343, -0.091050036, 0.0,
                       0.0795803, 0.1609302, 0.2461123, 0.33791524, 0.44070983, 0.562617, 0.72295684, 1.0])
MIDPOINTS = (LEVELS[1:] + LEVELS[:-1]) / 2


def q4(w, block):
    """Dequantized q4 of a [rows, cols] matrix, as model_wasm::converted::quantize_q4."""
    rows, cols = w.shape
    w = w.reshape(rows, cols // block, block)
    top = w.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    best_e, best_s = torch.full(top.shape, float("inf")), top.clone()
    for step in range(17):
        q = LEVELS[torch.bucketize(w / (top * (0.7 + 0.025 * step)), MIDPOINTS)]
        s = (w * q).sum(-1, keepdim=True) / (q * q).sum(-1, keepdim=True).clamp_min(1e-30)
        e = ((w - s * q) ** 2).sum(-1, keepdim=True)
        better = e < best_e
        best_e, best_s = torch.where(better, e, best_e), torch.where(better, s, best_s)
    s = best_s.half().float().clamp_min(1e-30)
    return (LEVELS[torch.bucketize(w / s, MIDPOINTS)] * s).reshape(rows, cols)


def q8(w):
    s = w.abs().amax(1, keepdim=True).clamp_min(1e-30) / 127
    return torch.round(w / s).clamp(-127, 127) * s


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(eos_token_id=2, bos_token_id=0, pad_token_id=1),
                        vision_config=dict(), projection_dim=512)
    model = CLIPModel(config).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([t["input_ids"] for t in json.loads((GOLDEN / "tiny-quickgelu-eos2.json").read_text())["texts"]])
    pixels = torch.cat([CLIPImageProcessor()(images=Image.open(p), return_tensors="pt")["pixel_values"]
                        for p in sorted(glob.glob(str(GOLDEN / "images/*")))
                        if not p.endswith(".txt")])

    def features(tower):
        with torch.no_grad():
            out = model.get_text_features(input_ids=ids) if tower == "text" else model.get_image_features(pixel_values=pixels)
        return out if torch.is_tensor(out) else out.pooler_output

    refs = {t: features(t) for t in ["text", "image"]}
    prefix = {"text": ("text_model.", "text_projection."), "image": ("vision_model.", "visual_projection.")}

    def trial(tower, choose):
        new, size = dict(state), 0
        for k, w in state.items():
            if not (k.startswith(prefix[tower]) and w.ndim >= 2 and k.endswith(".weight") and "position_embedding" not in k):
                continue
            scheme, flat = choose(k), w.reshape(w.shape[0], -1)
            if scheme == "q8":
                new[k], size = q8(flat).reshape(w.shape), size + w.numel() + 4 * w.shape[0]
            else:
                block = int(scheme[3:])
                new[k], size = q4(flat, block).reshape(w.shape), size + w.numel() * (4 + 16 / block) / 8
        model.load_state_dict(new)
        cos = torch.nn.functional.cosine_similarity(features(tower), refs[tower])
        model.load_state_dict(state)
        return f"{cos.min():.5f} / {cos.mean():.5f}", f"{size / 1e6:.1f}"

    def q8_if(parts, rest="q4_16"):
        return lambda k: "q8" if any(p in k for p in parts) else rest

    print("| tower | q4 everywhere except … in q8 | min / mean cosine | quantized MB |\n|---|---|---|---|")
    text = {"nothing (blocks of 16)": lambda k: "q4_16"}
    text |= {p: q8_if([p]) for p in ["token_embedding", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2",
                                       "text_projection"]}
    text |= {f"layer {i}": q8_if([f"layers.{i}."]) for i in [0, 1, 5, 11]}
    text |= {"v_proj, out_proj, text_projection": q8_if(["v_proj", "out_proj", "text_projection"]),
             "v_proj, out_proj, text_projection, layer 0 (blocks of 32 elsewhere: `weights-tool` q4)":
                 q8_if(["v_proj", "out_proj", "text_projection", "layers.0."], "q4_32")}
    for name, choose in text.items():
        print(f"| text | {name} | " + " | ".join(trial("text", choose)) + " |", flush=True)
    image = {"nothing (blocks of 16)": lambda k: "q4_16", "nothing (blocks of 32: `weights-tool` q4)": lambda k: "q4_32",
             "v_proj, out_proj (blocks of 32 elsewhere)": q8_if(["v_proj", "out_proj"], "q4_32")}
    for name, choose in image.items():
        print(f"| image | {name} | " + " | ".join(trial("image", choose)) + " |", flush=True)


if __name__ == "__main__":
    main()
