#!/usr/bin/env python3
"""Golden fixtures for model-wasm: transformers' outputs on fixed inputs.

Not run by CI (it needs torch). Reproduce with:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers safetensors pillow numpy open_clip_torch
    /tmp/ref/bin/python tests/golden/generate.py

Writes, under tests/golden/:
  images/            varied inputs (odd sizes, 1000x60, 7x5, RGBA, LA, palette, grey, 16-bit grey and
                     RGB, JPEG, EXIF-rotated JPEG and PNG, GIF, BMP, TIFF, WebP)
  models/<name>/     tiny random CLIP checkpoints (config.json, preprocessor_config.json,
                     model.safetensors and/or pytorch_model.bin, tokenizer.json, tokenizer_config.json)
  <name>.json        token ids, pixel files, normalised embeddings, logits, per model
  pixels/<name>/     transformers' pixel_values per image and EXIF mode, raw little-endian f32 [3,S,S]
  clip224/           uint8 crops behind CLIPImageProcessorPil's default 224 pixel values (PNG; the
                     generator asserts that normalising them reproduces transformers' floats exactly)
"""

import gzip
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image, ImageOps
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

HERE = Path(__file__).resolve().parent
SEED = 20261123


def clip_tokenizer(out_dir: Path) -> CLIPTokenizer:
    """The real CLIP BPE, built from open_clip's bpe_simple_vocab_16e6.txt.gz as CLIP does."""
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges[1 : 49152 - 256 - 2 + 1]]
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_vocab = [chr(c) for c in cs]
    vocab = byte_vocab + [v + "</w>" for v in byte_vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges)
    assert len(tok) == 49408, len(tok)
    return tok


TEXTS = [
    "",
    "a photo of a cat",
    "An H&E image of poorly differentiated adenocarcinoma.",
    "an H&E image of adipose tissue.",
    "lymphocytes",
    "CANCER-ASSOCIATED STROMA",
    "normal colon mucosa with goblet cells",
    "debris / necrosis (~20%)",
    "smooth   muscle\twith\nnewlines",
    "mucus: pale blue-grey wisps...",
    "x-ray of the chest, PA view",
    "fundus photo: optic disc & macula",
    "H&E 40x magnification, 0.25 µm/px",
    "Ki-67 index = 35 %",
    "tumour vs. tumor",
    "naïve café résumé",
    "Größe der Läsion: 12 mm",
    "病理图像：腺癌",
    "гистология толстой кишки",
    "صورة نسيجية",
    "emoji 🔬🧫 microscope",
    "it's the patient's 2nd biopsy, isn't it?",
    "#hashtag @mention http://example.org/path?q=1",
    "1234567890 3.14159 1e-5 -42",
    "<|startoftext|> literal special tokens <|endoftext|>",
    "ALL CAPS AND lower case MiXeD",
    "'s 't 're 've 'm 'll 'd",
    "  leading and trailing spaces  ",
    "punctuation!!! ??? ... ;;; :::",
    "a" * 5,
    " ".join(["word"] * 100),
    "a long clinical description " + ", ".join(f"finding number {i}" for i in range(40)),
]


def tiny_models():
    """Two tiny random CLIPs covering both activations and both EOS conventions."""
    a = CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=16, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
            bos_token_id=0, pad_token_id=1, eos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=24, intermediate_size=56, num_hidden_layers=2, num_attention_heads=3, image_size=32,
            patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        ),
        projection_dim=12,
    )
    b = CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=16, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
            max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-6,
            bos_token_id=49406, pad_token_id=49407, eos_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=48,
            patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6,
        ),
        projection_dim=16,
    )
    # Old layout (ints, no rescale keys) with OpenAI's statistics; new layout with other ones.
    pre_a = {
        "crop_size": 32, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 32,
    }
    pre_b = {
        "crop_size": {"height": 48, "width": 48}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.45, 0.4],
        "image_processor_type": "CLIPImageProcessor", "image_std": [0.25, 0.3, 0.2], "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 48},
    }
    return [("tiny-quickgelu-eos2", a, pre_a, ["safetensors", "bin"]), ("tiny-gelu-eos49407", b, pre_b, ["safetensors"])]


def perturbed_model(config: CLIPConfig, seed: int) -> CLIPModel:
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(2.0)  # not logit_scale_init_value (2.6592)
            elif p.dim() == 1:
                # LayerNorm weights/biases and linear biases: far from identity/zero.
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("norm1.weight") or "layernorm" in name or "layrnorm" in name or "norm2.weight" in name or "final_layer_norm.weight" in name else 0.0))
            else:
                p.copy_(torch.randn_like(p) * (1.0 / max(p.shape[-1], 1) ** 0.5) * 1.5)
    return model


def png16_rgb(path: Path, arr: np.ndarray):
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def smooth(rng, h, w, c=3):
    """A smooth colourful pattern plus noise: resampling errors show up, unlike on flat images."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for k in range(c):
        fx, fy, ph = rng.uniform(0.02, 0.3), rng.uniform(0.02, 0.3), rng.uniform(0, 6.28)
        chans.append(127.5 + 100 * np.sin(fx * x + ph) * np.cos(fy * y) + rng.normal(0, 12, (h, w)))
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def make_images(out: Path):
    rng = np.random.default_rng(SEED)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth(rng, 23, 37)).save(out / "odd-37x23.png")
    Image.fromarray(smooth(rng, 60, 1000)).save(out / "wide-1000x60.png")
    Image.fromarray(smooth(rng, 301, 45)).save(out / "tall-45x301.png")
    Image.fromarray(smooth(rng, 5, 7)).save(out / "tiny-7x5.png")
    Image.fromarray(smooth(rng, 480, 640)).save(out / "large-640x480.png")
    rgba = np.concatenate([smooth(rng, 48, 64), rng.integers(0, 256, (48, 64, 1), dtype=np.uint8)], -1)
    rgba[:8, :8, 3] = 0
    rgba[-8:, -8:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(out / "rgba-64x48.png")
    Image.fromarray(smooth(rng, 70, 50, 1)[..., 0], "L").save(out / "grey-50x70.png")
    la = np.stack([smooth(rng, 30, 30, 1)[..., 0], rng.integers(0, 256, (30, 30), dtype=np.uint8)], -1)
    Image.fromarray(la, "LA").save(out / "grey-alpha-30x30.png")
    g16 = (smooth(rng, 30, 40, 1)[..., 0].astype(np.uint16) * 3)  # 0..765: both below and above 255
    Image.fromarray(g16.astype(np.uint16)).save(out / "grey16-40x30.png")
    png16_rgb(out / "rgb16-33x44.png", smooth(rng, 44, 33).astype(np.uint16) * 257 + rng.integers(0, 257, (44, 33, 3)).astype(np.uint16))
    pal = Image.fromarray(smooth(rng, 40, 52)).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.info["transparency"] = 3
    pal.save(out / "palette-52x40.png", transparency=3)
    Image.fromarray(smooth(rng, 90, 120)).save(out / "photo-120x90.jpg", quality=90)
    # EXIF orientation 6: stored landscape, displayed portrait (rotate 270 / "rotate 90 CW").
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth(rng, 40, 64)).save(out / "exif6-64x40.jpg", quality=92, exif=exif.tobytes())
    exif[0x0112] = 8
    Image.fromarray(smooth(rng, 30, 50)).save(out / "exif8-50x30.png", exif=exif.tobytes())
    frames = [Image.fromarray(smooth(rng, 36, 36)).quantize(colors=32, dither=Image.Dither.NONE) for _ in range(2)]
    frames[0].save(out / "anim-36x36.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(smooth(rng, 27, 31)).save(out / "bitmap-31x27.bmp")
    Image.fromarray(smooth(rng, 26, 34)).save(out / "scan-34x26.tiff")
    Image.fromarray(smooth(rng, 29, 41)).save(out / "lossless-41x29.webp", lossless=True)


# Lossy codecs: Pillow's libjpeg-turbo and the Rust decoders need not agree bit for bit.
LOSSY = {".jpg", ".jpeg"}


def open_image(path: Path, exif: str) -> Image.Image:
    im = Image.open(path)
    im.load()
    return ImageOps.exif_transpose(im) if exif == "apply" else im


def has_exif_orientation(path: Path) -> bool:
    return Image.open(path).getexif().get(0x0112, 1) != 1


def main():
    torch.set_num_threads(2)
    images_dir = HERE / "images"
    make_images(images_dir)
    image_paths = sorted(p for p in images_dir.iterdir() if p.is_file())
    tok = clip_tokenizer(HERE)

    cases = [(p, "apply") for p in image_paths] + [(p, "ignore") for p in image_paths if has_exif_orientation(p)]

    # Default CLIPImageProcessorPil at 224: store the uint8 crops behind its pixel values.
    clip224 = HERE / "clip224"
    shutil.rmtree(clip224, ignore_errors=True)
    clip224.mkdir()
    proc = CLIPImageProcessorPil()
    mean = np.array(proc.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(proc.image_std, dtype=np.float32)[:, None, None]
    entries = []
    for path, exif in cases:
        pv = proc(images=[open_image(path, exif)], return_tensors="np")["pixel_values"][0]
        u8 = np.rint((pv * std + mean) * 255).astype(np.uint8)
        again = ((u8.astype(np.float64) * (1 / 255)).astype(np.float32) - mean) / std
        assert np.abs(again - pv).max() <= 1e-6, (path, np.abs(again - pv).max())
        name = f"{path.stem}.{exif}.png"
        Image.fromarray(np.transpose(u8, (1, 2, 0))).save(clip224 / name)
        entries.append({"file": path.name, "exif": exif, "crop": name, "lossy": path.suffix in LOSSY})
    (clip224 / "index.json").write_text(json.dumps(entries, indent=1))

    for i, (name, config, pre, formats) in enumerate(tiny_models()):
        model = perturbed_model(config, SEED + i)
        mdir = HERE / "models" / name
        shutil.rmtree(mdir, ignore_errors=True)
        mdir.mkdir(parents=True)
        if "safetensors" in formats:
            model.save_pretrained(mdir, safe_serialization=True)
        if "bin" in formats:
            state = model.state_dict()
            # Old checkpoints carry int64 position_ids buffers: keep one to prove they are ignored.
            state["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
            torch.save(state, mdir / "pytorch_model.bin")
            model.config.save_pretrained(mdir)
        (mdir / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
        tok.save_pretrained(mdir)
        for junk in ["special_tokens_map.json", "vocab.json", "merges.txt", "generation_config.json"]:
            (mdir / junk).unlink(missing_ok=True)

        proc = CLIPImageProcessorPil.from_pretrained(mdir)
        enc = tok(TEXTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        pix_dir = HERE / "pixels" / name
        shutil.rmtree(pix_dir, ignore_errors=True)
        pix_dir.mkdir(parents=True)
        pixel_values = []
        image_entries = []
        for path, exif in cases:
            pv = proc(images=[open_image(path, exif)], return_tensors="pt")["pixel_values"]
            pixel_values.append(pv)
            f = f"{path.stem}.{exif}.f32"
            pv[0].numpy().astype("<f4").tofile(pix_dir / f)
            image_entries.append({"file": path.name, "exif": exif, "pixels": f, "lossy": path.suffix in LOSSY})
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=torch.cat(pixel_values))
        for e, emb in zip(image_entries, out.image_embeds):
            e["embedding"] = emb.tolist()
        golden = {
            "model": name,
            "logit_scale": float(model.logit_scale),
            "texts": [
                {"text": t, "input_ids": ids.tolist(), "embedding": emb.tolist()}
                for t, ids, emb in zip(TEXTS, enc["input_ids"], out.text_embeds)
            ],
            "images": image_entries,
            "logits_per_image": out.logits_per_image.tolist(),
        }
        (HERE / f"{name}.json").write_text(json.dumps(golden))
        print(name, "texts", len(TEXTS), "images", len(image_entries))


if __name__ == "__main__":
    main()
