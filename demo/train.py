#!/usr/bin/env python3
"""Train Obscura's bundled demo model: a small CLIP on procedurally generated H&E-like tiles.

Not run by CI (it needs torch). Seeded and CPU-only: about 33 minutes on two (busy) cores, 6 of them drawing tiles. Reproduce:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers safetensors pillow numpy scipy
    /tmp/ref/bin/python demo/train.py
    cargo run --release -p weights-tool -- convert demo/checkpoint --out public/models/demo --dtype q8 \
        --name "Obscura demo (toy H&E CLIP)" --domain pathology --license MIT \
        --template "an H&E image of {}."

Writes:
  demo/checkpoint/        Hugging Face CLIPModel layout (config, preprocessor config, model.safetensors,
                          the real CLIP tokenizer)
  demo/RESULTS.md         zero-shot accuracy, weighted F1, per-class recall and precision@10 on
                          held-out tiles
  public/samples/         the demo collection: 200 tiles, names that do not give the class away,
                          manifest.json with the true classes
  tests/golden/demo.json  this model's (transformers') embeddings of the demo collection, of two
                          tiles per class saved losslessly (tests/golden/demo-png/) and of the nine
                          class prompts, for the Rust tests
"""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPConfig, CLIPModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from tiles import CLASSES, caption, tile

ROOT = Path(os.environ.get("OBSCURA_OUT_ROOT", Path(__file__).resolve().parent.parent))
HERE = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo" / "checkpoint"
SAMPLES = ROOT / "public" / "samples"
TEMPLATE = "an H&E image of {}."
SEED = 20261123
QUICK = bool(os.environ.get("OBSCURA_QUICK"))  # a smoke run of the script, nothing worth keeping
TRAIN_PER_CLASS = 30 if QUICK else 500
EVAL_PER_CLASS = 10 if QUICK else 60
DEMO_TILES = 200
IMAGE_SIZE = 96


def config() -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=96,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=16,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        ),
        projection_dim=64,
    )


def processor() -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        # OpenAI CLIP's statistics, as PLIP and most CLIP checkpoints ship
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def tiles(seed: int, per_class: int):
    rng = np.random.default_rng(seed)
    labels = [c for c in range(len(CLASSES)) for _ in range(per_class)]
    return [tile(rng, CLASSES[c]) for c in labels], np.array(labels)


def pixels(proc, images) -> torch.Tensor:
    out = []
    for i in range(0, len(images), 256):
        out.append(proc(images=images[i : i + 256], return_tensors="pt")["pixel_values"])
    return torch.cat(out)


@torch.no_grad()
def embed_images(model, px, batch=256):
    model.eval()
    feats = [model.get_image_features(pixel_values=px[i : i + batch]) for i in range(0, len(px), batch)]
    feats = [f.pooler_output if hasattr(f, "pooler_output") else f for f in feats]
    return F.normalize(torch.cat(feats), dim=-1)


@torch.no_grad()
def embed_texts(model, tok, texts):
    model.eval()
    enc = tok(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    f = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    f = f.pooler_output if hasattr(f, "pooler_output") else f
    return F.normalize(f, dim=-1), enc["input_ids"]


def evaluate(model, tok, px, labels):
    img = embed_images(model, px)
    txt, _ = embed_texts(model, tok, [TEMPLATE.format(c) for c in CLASSES])
    pred = (img @ txt.T).argmax(1).numpy()
    k = len(CLASSES)
    rows = []
    f1s, support = [], []
    for c in range(k):
        tp = int(((pred == c) & (labels == c)).sum())
        fp = int(((pred == c) & (labels != c)).sum())
        fn = int(((pred != c) & (labels == c)).sum())
        prec = tp / max(tp + fp, 1)
        rec = tp / max(tp + fn, 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-9)
        top10 = torch.topk(img @ txt[c], 10).indices.numpy()
        p10 = float((labels[top10] == c).mean())
        rows.append((CLASSES[c], rec, prec, f1, p10))
        f1s.append(f1)
        support.append(int((labels == c).sum()))
    acc = float((pred == labels).mean())
    wf1 = float(np.average(f1s, weights=support))
    return acc, wf1, rows


def demo_collection(model, tok, proc):
    """The demo collection and transformers' embeddings of it (also: `train.py --demo-only`)."""
    # The demo collection: mixed classes, shuffled, names that do not give the class away.
    demo_imgs, demo_y = tiles(SEED + 3, (DEMO_TILES + len(CLASSES) - 1) // len(CLASSES))
    order = np.random.default_rng(SEED + 4).permutation(len(demo_imgs))[:DEMO_TILES]
    if SAMPLES.exists():
        shutil.rmtree(SAMPLES)
    SAMPLES.mkdir(parents=True)
    manifest, files = [], []
    for k, i in enumerate(order):
        name = f"tile-{k + 1:03d}.jpg"
        # 4:4:4 (no chroma subsampling): JPEG decoders differ most in chroma upsampling, and the
        # Rust tests compare embeddings of these very files with transformers' (PIL's libjpeg).
        demo_imgs[i].save(SAMPLES / name, quality=90, subsampling=0, optimize=True)
        manifest.append({"file": name, "class": CLASSES[demo_y[i]]})
        files.append(SAMPLES / name)
    (SAMPLES / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")

    # Two tiles per class also losslessly (PNG): with no decoder difference in the way, the Rust
    # model must reproduce these to cosine 0.99999.
    lossless_dir = ROOT / "tests" / "golden" / "demo-png"
    if lossless_dir.exists():
        shutil.rmtree(lossless_dir)
    lossless_dir.mkdir(parents=True)
    lossless = []
    for c in range(len(CLASSES)):
        for i in [i for i in order if demo_y[i] == c][:2]:
            name = f"{manifest[list(order).index(i)]['file'][:-4]}.png"
            demo_imgs[i].save(lossless_dir / name, optimize=True)
            lossless.append({"file": name, "class": CLASSES[c]})

    # Reference embeddings from the saved files, decoded from disk as a user's files would be.
    from PIL import Image

    img = embed_images(model, pixels(proc, [Image.open(f) for f in files]))
    img_png = embed_images(model, pixels(proc, [Image.open(lossless_dir / m["file"]) for m in lossless]))
    prompts = [TEMPLATE.format(c) for c in CLASSES]
    txt, ids = embed_texts(model, tok, prompts)
    ref = {
        "model": "demo/checkpoint",
        "template": TEMPLATE,
        "images": [{"file": m["file"], "class": m["class"], "embedding": e.tolist()} for m, e in zip(manifest, img)],
        "lossless": [{"file": m["file"], "class": m["class"], "embedding": e.tolist()} for m, e in zip(lossless, img_png)],
        "texts": [{"text": t, "input_ids": i.tolist(), "embedding": e.tolist()} for t, i, e in zip(prompts, ids, txt)],
    }
    (ROOT / "tests" / "golden" / "demo.json").write_text(json.dumps(ref) + "\n")


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    t0 = time.time()
    proc = processor()
    tok = AutoTokenizer.from_pretrained(HERE / "tests" / "golden" / "models" / "tiny-gelu-eos49407")
    assert len(tok) == 49408

    train_imgs, train_y = tiles(SEED, TRAIN_PER_CLASS)
    eval_imgs, eval_y = tiles(SEED + 1, EVAL_PER_CLASS)
    train_px, eval_px = pixels(proc, train_imgs), pixels(proc, eval_imgs)
    print(f"tiles: {len(train_imgs)} train, {len(eval_imgs)} held out, {time.time() - t0:.0f}s", flush=True)

    model = CLIPModel(config())
    emb = model.text_model.embeddings.token_embedding.weight
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)
    epochs, batch = (2, 64) if QUICK else (24, 128)
    steps = epochs * (len(train_imgs) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(SEED + 2)
    seen = set()
    y = torch.from_numpy(train_y)
    step = 0
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(train_imgs)))
        total = 0.0
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            px = train_px[idx]
            # free augmentations: the tiles have no orientation
            if rng.random() < 0.5:
                px = px.flip(-1)
            px = torch.rot90(px, int(rng.integers(4)), (-2, -1))
            texts = [caption(rng, CLASSES[int(c)]) for c in y[idx]]
            enc = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
            seen.update(enc["input_ids"].flatten().tolist())
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=px)
            logits = out.logits_per_image
            # captions of the same class are all matches: multi-positive CLIP loss
            same = (y[idx][:, None] == y[idx][None, :]).float()
            target = same / same.sum(1, keepdim=True)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += loss.item()
        acc, wf1, _ = evaluate(model, tok, eval_px, eval_y)
        n = len(order) // batch
        print(f"epoch {epoch + 1:2}/{epochs} loss {total / n:.3f} zero-shot acc {acc:.3f} wF1 {wf1:.3f} ({time.time() - t0:.0f}s)", flush=True)

    # Tokens never seen in training kept their random initial rows: they carry nothing learned.
    # Zero them so the checkpoint compresses (the vocabulary and tokenizer stay the real CLIP ones).
    seen.update(embed_texts(model, tok, [TEMPLATE.format(c) for c in CLASSES])[1].flatten().tolist())
    unseen = torch.ones(emb.shape[0], dtype=torch.bool)
    unseen[list(seen)] = False
    with torch.no_grad():
        emb[unseen] = 0
    print(f"token embedding: {int((~unseen).sum())} trained rows kept, {int(unseen.sum())} zeroed")

    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT)
    proc.save_pretrained(OUT)
    tok.save_pretrained(OUT)
    # reload what was saved: every number below comes from the files that ship
    model = CLIPModel.from_pretrained(OUT)

    acc, wf1, rows = evaluate(model, tok, eval_px, eval_y)
    report = [
        "# Demo model: results on held-out generated tiles",
        "",
        f"Written by `demo/train.py` (seed {SEED}). {len(eval_imgs)} held-out tiles ({EVAL_PER_CLASS} per class, a",
        "seed the training never saw), zero-shot with the prompt `an H&E image of {class}.`",
        "",
        f"- zero-shot accuracy: **{acc:.3f}** (chance: {1 / len(CLASSES):.3f})",
        f"- weighted F1: **{wf1:.3f}**",
        f"- trained on {len(train_imgs)} tile-caption pairs, {epochs} epochs, {time.time() - t0:.0f} s on this machine's CPU",
        "",
        "| class | recall (accuracy) | precision | F1 | text→image precision@10 |",
        "|---|---|---|---|---|",
    ]
    report += [f"| {c} | {r:.3f} | {p:.3f} | {f:.3f} | {p10:.2f} |" for c, r, p, f, p10 in rows]
    (ROOT / "demo" / "RESULTS.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))

    demo_collection(model, tok, proc)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    import sys

    if "--demo-only" in sys.argv:  # remake the collection and demo.json from the saved checkpoint
        torch.set_num_threads(2)
        demo_collection(CLIPModel.from_pretrained(OUT), AutoTokenizer.from_pretrained(OUT), processor())
    else:
        main()
