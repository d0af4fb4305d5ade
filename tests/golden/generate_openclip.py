#!/usr/bin/env python3
"""Golden fixture for OpenCLIP checkpoints (the layout wisdomik/QuiltNet-B-32 ships).

Not run by CI (it needs torch and open_clip_torch). Reproduce with the venv of generate.py:

    /tmp/ref/bin/python tests/golden/generate_openclip.py

Writes, under tests/golden/:
  models/tiny-openclip/   a tiny random open_clip `CLIP` (ViT vision tower, fused `in_proj_weight`
                          attention, `visual.proj`/`text_projection` matrices) saved as
                          open_clip_pytorch_model.bin + open_clip_config.json, the CLIP tokenizer.json
  tiny-openclip.json      open_clip's normalised embeddings, in generate.py's golden format

The images are preprocessed as transformers' CLIPImageProcessor does with open_clip's mean, std and
size (what `weights-tool convert` writes for such a checkpoint), and fed to open_clip's own
`encode_image`; the texts are tokenized by open_clip's tokenizer, compared with the CLIP tokenizer.json's
(a few unicode strings differ: open_clip cleans text with ftfy; the generator prints which), and the
encoders get tokenizer.json's ids (padding with <|endoftext|> instead of open_clip's 0 changes
nothing: open_clip pools at the first argmax, and the causal mask hides what follows). So the test checks the weight mapping, not a second preprocessing.
"""

import json
import shutil

import numpy as np
import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from transformers import CLIPTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from generate import HERE, LOSSY, SEED, TEXTS, has_exif_orientation, open_image

NAME = "tiny-openclip"
MODEL_CFG = {
    "embed_dim": 16,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 40, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 24, "heads": 3, "layers": 2},
}
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def main():
    torch.set_num_threads(2)
    torch.manual_seed(SEED + 7)
    model = CLIP(
        embed_dim=MODEL_CFG["embed_dim"],
        vision_cfg=CLIPVisionCfg(**MODEL_CFG["vision_cfg"]),
        text_cfg=CLIPTextCfg(**MODEL_CFG["text_cfg"]),
        quick_gelu=MODEL_CFG["quick_gelu"],
    ).eval()

    tokenizer = CLIPTokenizerFast.from_pretrained(HERE / "models" / "tiny-gelu-eos49407")
    enc = tokenizer(TEXTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    # open_clip's own tokenizer cleans text with ftfy and its own whitespace rules, so a few unicode
    # strings tokenize differently from tokenizer.json: report them. The encoders get the same ids.
    oc_ids = open_clip.tokenize(TEXTS)
    differ = [t for t, hf, oc in zip(TEXTS, enc["input_ids"], oc_ids) if hf[: int((oc != 0).sum())].tolist() != oc[oc != 0].tolist()]
    print(f"{len(differ)} of {len(TEXTS)} texts tokenize differently in open_clip: {differ}")
    ids = enc["input_ids"]
    used = torch.unique(ids)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(2.3)
            elif name == "token_embedding.weight":
                # Only the rows the test texts use carry values: the rest compress to nothing.
                p.zero_()
                p[used] = torch.randn(len(used), p.shape[1]) * 0.5
            elif p.dim() == 1 and name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                p.copy_(torch.randn_like(p) * 0.3 + 1.0)
            elif p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.3)
            else:
                p.copy_(torch.randn_like(p) * (1.0 / max(p.shape[-1], 1) ** 0.5) * 1.5)

    mdir = HERE / "models" / NAME
    shutil.rmtree(mdir, ignore_errors=True)
    mdir.mkdir(parents=True)
    torch.save(model.state_dict(), mdir / "open_clip_pytorch_model.bin")
    config = {
        "model_cfg": MODEL_CFG,
        "preprocess_cfg": {"mean": MEAN, "std": STD, "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    (mdir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(HERE / "models" / "tiny-gelu-eos49407" / "tokenizer.json", mdir / "tokenizer.json")

    size = MODEL_CFG["vision_cfg"]["image_size"]
    proc = CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_mean=MEAN, image_std=STD
    )
    images_dir = HERE / "images"
    paths = sorted(p for p in images_dir.iterdir() if p.is_file())
    cases = [(p, "apply") for p in paths] + [(p, "ignore") for p in paths if has_exif_orientation(p)]
    pixels = torch.cat([proc(images=[open_image(p, exif)], return_tensors="pt")["pixel_values"] for p, exif in cases])
    with torch.no_grad():
        img = model.encode_image(pixels, normalize=True)
        txt = model.encode_text(ids, normalize=True)
        logits = model.logit_scale.exp() * img @ txt.T
    golden = {
        "model": NAME,
        "logit_scale": float(model.logit_scale),
        "texts": [{"text": t, "input_ids": ids.tolist(), "embedding": e.tolist()} for t, ids, e in zip(TEXTS, enc["input_ids"], txt)],
        "images": [
            {"file": p.name, "exif": exif, "lossy": p.suffix in LOSSY, "embedding": e.tolist()}
            for (p, exif), e in zip(cases, img)
        ],
        "logits_per_image": logits.tolist(),
    }
    (HERE / f"{NAME}.json").write_text(json.dumps(golden))
    print(NAME, "texts", len(TEXTS), "images", len(cases), "parameters", sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
