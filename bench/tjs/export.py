#!/usr/bin/env python3
"""Full-size random CLIP ViT-B/32 for the transformers.js benchmark (bench/bench_tjs.sh).

    /tmp/ref/bin/python bench/tjs/export.py [OUT]      # OUT defaults to target/tjs

Writes
    OUT/checkpoint/                 HF checkpoint (safetensors) + CLIPImageProcessor + tokenizer
    OUT/tjs/<MODEL>/                the layout transformers.js loads with env.localModelPath = OUT/tjs:
        config.json, preprocessor_config.json, tokenizer.json, tokenizer_config.json
        onnx/vision_model.onnx            fp32  (dtype: "fp32")
        onnx/vision_model_quantized.onnx  dynamic int8 (dtype: "q8")
The weights are the ones bench/bench_browser.sh and bench/bench_clip.py use (seed 0,
transformers' init, openai/clip-vit-base-patch32's sizes). Needs torch, transformers, onnx,
onnxruntime (and onnxscript for torch's dynamo exporter).
"""
import shutil, sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import logging as hf_logging
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionModelWithProjection

ROOT = Path(__file__).resolve().parents[2]
MODEL = "clip-vit-b32-random"  # the model id the page asks for
OPSET = 17


class ImageEmbeds(torch.nn.Module):
    """pixel_values -> image_embeds (projected, not normalised), as transformers.js' export does."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).image_embeds


def cosine(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main():
    hf_logging.set_verbosity_error()  # loading the vision tower alone lists the text weights it skips
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target/tjs")
    ckpt, tjs = out / "checkpoint", out / "tjs" / MODEL
    (tjs / "onnx").mkdir(parents=True, exist_ok=True)

    # 1. The checkpoint.
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(eos_token_id=2, bos_token_id=0, pad_token_id=1),
        vision_config=dict(),
        projection_dim=512,
    )
    CLIPModel(config).eval().save_pretrained(ckpt, safe_serialization=True)
    CLIPImageProcessor().save_pretrained(ckpt)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(ROOT / "tests/golden/models/tiny-quickgelu-eos2" / f, ckpt)
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(ckpt / f, tjs)

    # 2. The vision tower with projection, fp32, batch axis dynamic.
    vision = CLIPVisionModelWithProjection.from_pretrained(ckpt, attn_implementation="eager").eval()
    wrapped = ImageEmbeds(vision).eval()
    fp32 = tjs / "onnx/vision_model.onnx"
    dummy = torch.randn(2, 3, 224, 224)
    try:  # torch's dynamo exporter (default in torch >= 2.9); one file, no external data
        torch.onnx.export(
            wrapped, (dummy,), fp32, input_names=["pixel_values"], output_names=["image_embeds"],
            opset_version=OPSET, dynamo=True, external_data=False,
            dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch_size")}},
        )
    except Exception as e:  # fall back to the TorchScript exporter
        print(f"dynamo export failed ({type(e).__name__}: {e}); using the TorchScript exporter")
        torch.onnx.export(
            wrapped, (dummy,), fp32, input_names=["pixel_values"], output_names=["image_embeds"],
            opset_version=OPSET, dynamo=False,
            dynamic_axes={"pixel_values": {0: "batch_size"}, "image_embeds": {0: "batch_size"}},
        )
    onnx.checker.check_model(str(fp32))

    # 3. q8: what transformers.js' scripts/quantize.py makes for dtype "q8" (file *_quantized.onnx):
    # dynamic quantisation, weights QUInt8 because the graph has a Conv (onnxruntime-web has no
    # ConvInteger for int8 weights), activations uint8, per-tensor, MatMul with constant B only.
    q8 = tjs / "onnx/vision_model_quantized.onnx"
    quantize_dynamic(fp32, q8, weight_type=QuantType.QUInt8, extra_options={"MatMulConstBOnly": True})

    # 4. Check against torch on 2 random images (and batch 3, for the dynamic axis).
    for n in (2, 3):
        x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            ref = wrapped(x).numpy()
        for name, path in [("fp32", fp32), ("q8", q8)]:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = sess.run(["image_embeds"], {"pixel_values": x.numpy()})[0]
            cos = cosine(ref, got)
            print(f"batch {n} {name:4s} cosine vs torch: min {cos.min():.7f}  {np.round(cos, 7).tolist()}")
            if name == "fp32":
                assert got.shape == ref.shape and cos.min() >= 0.9999, "ONNX fp32 does not match torch"
    for p in (fp32, q8):
        print(f"{p}: {p.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
