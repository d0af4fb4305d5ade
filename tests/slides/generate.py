#!/usr/bin/env python3
"""Synthetic whole-slide images for Obscura's slide reader, tissue mask and slide search tests.

Seeded and deterministic; not run by CI (it needs tifffile, imagecodecs, scipy, Pillow and, for
DICOM, wsidicomizer from PyPI). The files it writes are committed under `tests/slides/data/`.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy scipy pillow tifffile imagecodecs wsidicomizer
    /tmp/v/bin/python tests/slides/generate.py

What it writes
- `tumour.svs`: an Aperio-like SVS (classic TIFF): level 0 at 0.25 µm/px, 256-px JPEG tiles in
  YCbCr that share one JPEGTables tag, a stripped thumbnail IFD, two reduced levels (/4, /16), and
  label and macro images (the label carries a made-up patient name, as real labels do). Level 0 is
  a grid of 192-px cells, each painted as one demo tissue class by `demo/tiles.py`; the tissue and
  tumour regions are smooth random blobs, recorded in `truth.json` per cell.
- `small-*`: one 520x390 image in every supported variant, with two levels:
  SVS BigTIFF JPEG (shared tables), SVS JPEG with RGB components that only the Photometric tag
  announces (no Adobe marker, component ids 1-3: what Aperio writes), SVS JPEG 2000 33003 (YCbCr
  components, no MCT) and 33005 (RGB, MCT), generic tiled TIFF with deflate + predictor, LZW,
  and self-contained JPEG tiles; and a DICOM WSI folder (wsidicomizer) of the JPEG SVS.
- `small-source.png`: the pixels every lossless variant must decode to, exactly; `refs/*.png`:
  reference decodes (libjpeg-turbo / OpenJPEG through imagecodecs) of level-0 tiles of the lossy
  variants.
- `refused/`: files the reader must refuse by name (NDPI, MRXS, iSyntax, CZI, VSI, SCN, OME-TIFF
  SubIFD pyramid, 4-channel fluorescence, JPEG-XR, a truncated and a corrupt SVS, DICOM
  TILED_SPARSE, JPEG-LS and HTJ2K).
"""

import io
import json
import os
import shutil
import struct
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "demo"))
import tiles  # noqa: E402

OUT = HERE / "data"
CELL = 192  # level-0 pixels per painted cell: 96 px (the demo model's input) at 0.5 µm/px
MPP = 0.25
TISSUE_CLASSES = [
    "lymphocytes",
    "smooth muscle",
    "normal colon mucosa",
    "cancer-associated stroma",
    "debris",
]
TUMOUR = "colorectal adenocarcinoma epithelium"


# ------------------------------------------------------------------ painting


def smooth_blob(rng, w, h, fill, sigma):
    """A smooth random region covering about `fill` of a w x h grid."""
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma)
    yy, xx = np.mgrid[0:h, 0:w]
    bowl = ((xx - (w - 1) / 2) / w) ** 2 + ((yy - (h - 1) / 2) / h) ** 2
    field = noise / noise.std() - 6.0 * bowl
    return field >= np.quantile(field, 1.0 - fill)


def paint_slide(seed, cells_w, cells_h):
    rng = np.random.default_rng(seed)
    tissue = smooth_blob(rng, cells_w, cells_h, 0.62, 2.0)
    score = ndimage.gaussian_filter(rng.standard_normal((cells_h, cells_w)), 1.5)
    score[~tissue] = -np.inf
    tumour = score >= np.quantile(score[tissue], 1.0 - 0.35)
    classes = []
    img = np.zeros((cells_h * CELL, cells_w * CELL, 3), np.uint8)
    for cy in range(cells_h):
        row = []
        for cx in range(cells_w):
            if tumour[cy, cx]:
                cls = TUMOUR
            elif tissue[cy, cx]:
                cls = TISSUE_CLASSES[rng.integers(len(TISSUE_CLASSES))]
            else:
                cls = "background"
            row.append(cls)
            t = tiles.tile(rng, cls).resize((CELL, CELL), Image.LANCZOS)
            img[cy * CELL:(cy + 1) * CELL, cx * CELL:(cx + 1) * CELL] = np.asarray(t)
        classes.append(row)
    return img, classes, tissue, tumour


def reduce(img, factor):
    h, w = img.shape[0] // factor, img.shape[1] // factor
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BOX))


# ------------------------------------------------------------------ JPEG tiles


def jpeg_segments(data):
    """Split a JPEG stream into (marker, bytes) segments up to and including SOS + scan data."""
    assert data[:2] == b"\xff\xd8"
    pos, out = 2, []
    while pos < len(data):
        assert data[pos] == 0xFF, pos
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, data[pos:pos + 2]))
            break
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == 0xDA:  # SOS: the entropy-coded data runs to EOI (baseline: one scan)
            end = data.rindex(b"\xff\xd9")
            out.append((marker, data[pos:end]))
            pos = end
            continue
        out.append((marker, data[pos:pos + 2 + length]))
        pos += 2 + length
    return out


def split_tables(stream):
    """(tables, abbreviated tile): DQT and DHT move to a JPEGTables stream."""
    segs = jpeg_segments(stream)
    tables = b"\xff\xd8" + b"".join(s for m, s in segs if m in (0xDB, 0xC4)) + b"\xff\xd9"
    tile = b"\xff\xd8" + b"".join(s for m, s in segs if m not in (0xDB, 0xC4) and not 0xE0 <= m <= 0xEF)
    return tables, tile


def strip_colour_hints(stream):
    """Drop APP0/APP14 and renumber components 1, 2, 3: what Aperio's RGB JPEG tiles look like."""
    out = b"\xff\xd8"
    for m, s in jpeg_segments(stream):
        if 0xE0 <= m <= 0xEF:
            continue
        if m in (0xC0, 0xC1, 0xC2):
            s = bytearray(s)
            n = s[9]
            for i in range(n):
                s[10 + 3 * i] = i + 1
            s = bytes(s)
        if m == 0xDA:
            s = bytearray(s)
            n = s[4]
            for i in range(n):
                s[5 + 2 * i] = i + 1
            s = bytes(s)
        out += s
    return out


def tile_grid(img, size):
    h, w = img.shape[:2]
    for ty in range(0, h, size):
        for tx in range(0, w, size):
            t = np.full((size, size, 3), 255, np.uint8)
            part = img[ty:ty + size, tx:tx + size]
            t[:part.shape[0], :part.shape[1]] = part
            yield t


def jpeg_tiles(img, size, rgb=False, quality=80):
    """Abbreviated JPEG tiles and their shared tables."""
    tables, out = None, []
    for t in tile_grid(img, size):
        if rgb:
            s = imagecodecs.jpeg8_encode(t, level=quality, colorspace="RGB", outcolorspace="RGB")
            s = strip_colour_hints(s)
        else:
            s = imagecodecs.jpeg8_encode(t, level=quality, colorspace="RGB", outcolorspace="YCBCR", subsampling="420")
        tab, tile = split_tables(s)
        assert tables in (None, tab), "every tile must share one set of tables"
        tables = tab
        out.append(tile)
    return tables, out


def rgb_to_ycbcr(t):
    x = t.astype(np.float64)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    cb = 128 - 0.168736 * x[..., 0] - 0.331264 * x[..., 1] + 0.5 * x[..., 2]
    cr = 128 + 0.5 * x[..., 0] - 0.418688 * x[..., 1] - 0.081312 * x[..., 2]
    return np.clip(np.round(np.stack([y, cb, cr], -1)), 0, 255).astype(np.uint8)


def ycbcr_to_rgb(t):
    x = t.astype(np.float64)
    y, cb, cr = x[..., 0], x[..., 1] - 128, x[..., 2] - 128
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return np.clip(np.round(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def j2k_tiles(img, size, ycbcr):
    out = []
    for t in tile_grid(img, size):
        if ycbcr:
            out.append(imagecodecs.jpeg2k_encode(rgb_to_ycbcr(t), codecformat="J2K", reversible=True, mct=False))
        else:
            out.append(imagecodecs.jpeg2k_encode(t, codecformat="J2K", reversible=True, mct=True))
    return out


# ------------------------------------------------------------------ writers


def aperio_description(w0, h0, w, h, tile, kind, mpp):
    head = f"Aperio Image Library vSynthetic \r\n{w0}x{h0} [0,0 {w0}x{h0}] ({tile}x{tile})"
    if (w, h) != (w0, h0):
        head += f" -> {w}x{h}"
    return f"{head} {kind} Q=80|AppMag = 40|StripeWidth = 2040|ScanScope ID = SYNTH|MPP = {mpp:.4f}|Filename = synthetic"


def label_image(w=300, h=300):
    img = Image.new("RGB", (w, h), (240, 240, 240))
    d = ImageDraw.Draw(img)
    d.text((10, 10), "DOE, JANE  MRN 0000000", fill=(0, 0, 0))
    d.rectangle((10, 60, 200, 200), outline=(0, 0, 0))
    return np.asarray(img)


def write_svs(path, levels, tile, variant, bigtiff=False):
    """levels: list of (image, downsample). variant: jpeg | jpeg-rgb | j2k-ycbcr | j2k-rgb."""
    w0, h0 = levels[0][0].shape[1], levels[0][0].shape[0]
    kind = {"jpeg": "JPEG/RGB", "jpeg-rgb": "JPEG/RGB", "j2k-ycbcr": "J2K/YUV16", "j2k-rgb": "J2K/KDU"}[variant]
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for i, (img, _) in enumerate(levels):
            h, w = img.shape[:2]
            desc = aperio_description(w0, h0, w, h, tile, kind, MPP)
            common = dict(shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), description=desc,
                          metadata=None, software=False)
            if variant in ("jpeg", "jpeg-rgb"):
                tables, data = jpeg_tiles(img, tile, rgb=variant == "jpeg-rgb")
                if variant == "jpeg":
                    tif.write(iter(data), compression=7, photometric="ycbcr", subsampling=(2, 2),
                              jpegtables=tables, **common)
                else:
                    tif.write(iter(data), compression=7, photometric="rgb", jpegtables=tables, **common)
            else:
                code = 33003 if variant == "j2k-ycbcr" else 33005
                tif.write(iter(j2k_tiles(img, tile, variant == "j2k-ycbcr")), compression=code,
                          photometric="rgb", **common)
            if i == 0:  # SVS: the thumbnail follows level 0, stripped
                thumb = reduce(img, max(1, w // 256))
                tif.write(thumb, compression="jpeg", photometric="rgb", rowsperstrip=16,
                          description=aperio_description(w0, h0, thumb.shape[1], thumb.shape[0], tile, kind, MPP),
                          metadata=None, software=False)
        tif.write(label_image(), compression="lzw", rowsperstrip=64, subfiletype=1,
                  description="Aperio Image Library vSynthetic \r\nlabel 300x300", metadata=None, software=False)
        tif.write(label_image(600, 240), compression="jpeg", rowsperstrip=16, subfiletype=9,
                  description="Aperio Image Library vSynthetic \r\nmacro 600x240", metadata=None, software=False)


def write_generic(path, levels, tile, compression, predictor=None):
    with tifffile.TiffWriter(path) as tif:
        for i, (img, down) in enumerate(levels):
            res = 1e4 / (MPP * down)  # pixels per centimetre
            tif.write(img, tile=(tile, tile), compression=compression, predictor=predictor,
                      photometric="rgb", subfiletype=0 if i == 0 else 1, resolution=(res, res),
                      resolutionunit="CENTIMETER", metadata=None, software=False)


# ------------------------------------------------------------------ DICOM


def write_dicom(svs, folder):
    from wsidicomizer import WsiDicomizer

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    WsiDicomizer.convert(str(svs), str(folder), tile_size=128, include_label=False,
                         include_overview=False, include_thumbnail=False)
    # Stable names: level by size, largest first.
    files = sorted(folder.rglob("*.dcm"), key=lambda p: -p.stat().st_size)
    for i, f in enumerate(files):
        f.rename(folder / f"level-{i}.dcm")
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        d.rmdir()


def dicom_variant(src, dst, *, sparse=False, syntax=None):
    import pydicom

    ds = pydicom.dcmread(src)
    if sparse:
        ds.DimensionOrganizationType = "TILED_SPARSE"
    if syntax:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(dst, enforce_file_format=True)


# ------------------------------------------------------------------ refused files


def write_refused(folder, small_svs):
    folder.mkdir(parents=True, exist_ok=True)
    img = np.zeros((64, 64, 3), np.uint8)
    # NDPI: a TIFF with Hamamatsu's private tags (65420 = NDPI format flag).
    tifffile.imwrite(folder / "slide.ndpi", img, extratags=[(65420, "I", 1, 1, True)], metadata=None)
    # Leica SCN: a BigTIFF whose description is Leica's XML.
    tifffile.imwrite(folder / "slide.scn", img, bigtiff=True, metadata=None,
                     description='<?xml version="1.0"?><scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01"></scn>')
    # OME-TIFF with a SubIFD pyramid.
    with tifffile.TiffWriter(folder / "pyramid.ome.tif") as tif:
        big = np.zeros((256, 256, 3), np.uint8)
        tif.write(big, subifds=1, tile=(128, 128), photometric="rgb", compression="zlib", metadata={"axes": "YXS"})
        tif.write(big[::2, ::2], subfiletype=1, tile=(128, 128), photometric="rgb", compression="zlib")
    # Fluorescence: four channels.
    tifffile.imwrite(folder / "fluorescence.tif", np.zeros((4, 128, 128), np.uint16), tile=(64, 64),
                     photometric="minisblack", planarconfig="separate", compression="zlib", metadata=None)
    # JPEG XR tiles (compression 22610): the reader refuses from the tag, before any tile.
    tifffile.imwrite(folder / "jpegxr.tif", img, tile=(64, 64), compression=22610 if hasattr(imagecodecs, "jpegxr_encode") and imagecodecs.JPEGXR.available else "zlib",
                     photometric="rgb", metadata=None)
    if not (hasattr(imagecodecs, "JPEGXR") and imagecodecs.JPEGXR.available):
        patch_compression(folder / "jpegxr.tif", 22610)
    (folder / "slide.mrxs").write_bytes(b"[GENERAL]\nSLIDE_VERSION = 01.02\n")
    (folder / "slide.isyntax").write_bytes(b'<?xml version="1.0" encoding="UTF-8"?><DataObject ObjectType="DPUfsImport">')
    (folder / "slide.czi").write_bytes(b"ZISRAWFILE" + bytes(22))
    (folder / "slide.vsi").write_bytes(tifffile_bytes(img))
    data = small_svs.read_bytes()
    (folder / "truncated.svs").write_bytes(data[: len(data) * 6 // 10])
    corrupt = bytearray(data)
    with tifffile.TiffFile(small_svs) as tif:
        page = tif.pages[0]
        off, n = page.dataoffsets[5], page.databytecounts[5]
    corrupt[off + 2: off + n] = bytes(n - 2)  # tile 5 of level 0: SOI kept, the rest zeros
    (folder / "corrupt-tile.svs").write_bytes(bytes(corrupt))


def tifffile_bytes(img):
    buf = io.BytesIO()
    tifffile.imwrite(buf, img, metadata=None)
    return buf.getvalue()


def patch_tag(path, tag, value, tiled_only=False):
    """Rewrite a SHORT tag of every IFD (classic TIFF) to `value`."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", data, 4)[0]
    while ifd:
        n = struct.unpack_from("<H", data, ifd)[0]
        tags = [struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0] for i in range(n)]
        for i in range(n):
            e = ifd + 2 + 12 * i
            if tags[i] == tag and (324 in tags or not tiled_only):
                struct.pack_into("<H", data, e + 8, value)
        ifd = struct.unpack_from("<I", data, ifd + 2 + 12 * n)[0]
    path.write_bytes(bytes(data))


def patch_compression(path, code):
    patch_tag(path, 259, code)


# ------------------------------------------------------------------ the bench's large slide


def write_big(path, gigabytes):
    """An SVS-like BigTIFF of about `gigabytes` GB for the reader's memory bench (never
    committed): 256-px JPEG tiles with shared tables, drawn from 64 pre-encoded demo tiles so
    that writing it takes seconds; level 0 square, with /4, /16 and /64 levels."""
    rng = np.random.default_rng(5)
    classes = TISSUE_CLASSES + [TUMOUR, "background"]
    pool = np.zeros((256, 64 * 256, 3), np.uint8)
    for i in range(64):
        pool[:, i * 256:(i + 1) * 256] = np.asarray(tiles.tile(rng, classes[i % len(classes)]).resize((256, 256), Image.LANCZOS))
    tables, encoded = jpeg_tiles(pool, 256)
    per_tile = sum(len(t) for t in encoded) / len(encoded)
    side = int(np.sqrt(gigabytes * 1e9 / per_tile)) * 256
    levels = [side // d for d in (1, 4, 16, 64)]

    def stream(n):
        for i in range(n):
            yield encoded[(i * 7 + i // 13) % len(encoded)]

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, w in enumerate(levels):
            n = ((w + 255) // 256) ** 2
            tif.write(stream(n), shape=(w, w, 3), dtype=np.uint8, tile=(256, 256), compression=7,
                      photometric="ycbcr", subsampling=(2, 2), jpegtables=tables, metadata=None, software=False,
                      description=aperio_description(levels[0], levels[0], w, w, 256, "JPEG/RGB", MPP))
    print(f"wrote {path}: {levels[0]}x{levels[0]} px, {os.path.getsize(path) / 1e9:.2f} GB")


# ------------------------------------------------------------------ main


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--big":
        return write_big(sys.argv[2], float(sys.argv[3]))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "refs").mkdir(exist_ok=True)

    # The search slide.
    cells_w, cells_h = 16, 12
    img, classes, tissue, tumour = paint_slide(7, cells_w, cells_h)
    levels = [(img, 1), (reduce(img, 4), 4), (reduce(img, 16), 16)]
    write_svs(OUT / "tumour.svs", levels, 256, "jpeg")
    truth = {
        "tumour.svs": {
            "mpp": MPP, "cell": CELL, "cells_w": cells_w, "cells_h": cells_h,
            "width": img.shape[1], "height": img.shape[0],
            "classes": classes,
            "tissue": tissue.astype(int).tolist(), "tumour": tumour.astype(int).tolist(),
        }
    }

    # One small image in every variant.
    rng = np.random.default_rng(11)
    small = np.zeros((390, 520, 3), np.uint8)
    for y in range(0, 390, 130):
        for x in range(0, 520, 130):
            cls = ["lymphocytes", "normal colon mucosa", TUMOUR, "cancer-associated stroma"][(x // 130 + y // 130) % 4]
            small[y:y + 130, x:x + 130] = np.asarray(tiles.tile(rng, cls).resize((130, 130), Image.LANCZOS))
    Image.fromarray(small).save(OUT / "small-source.png")
    small_levels = [(small, 1), (reduce(small, 2), 2)]
    write_svs(OUT / "small-jpeg-bigtiff.svs", small_levels, 128, "jpeg", bigtiff=True)
    write_svs(OUT / "small-jpeg.svs", small_levels, 128, "jpeg")
    write_svs(OUT / "small-jpeg-rgb.svs", small_levels, 128, "jpeg-rgb")
    # tifffile files JPEG tiles as YCbCr whatever it is told; Aperio says RGB (Photometric 2).
    patch_tag(OUT / "small-jpeg-rgb.svs", 262, 2, tiled_only=True)
    write_svs(OUT / "small-j2k-ycbcr.svs", small_levels, 128, "j2k-ycbcr")
    write_svs(OUT / "small-j2k-rgb.svs", small_levels, 128, "j2k-rgb")
    write_generic(OUT / "small-deflate.tif", small_levels, 128, "zlib", predictor=2)
    write_generic(OUT / "small-lzw.tif", small_levels, 128, "lzw", predictor=2)
    write_generic(OUT / "small-jpeg.tif", small_levels, 128, "jpeg")

    # Reference decodes of level-0 tiles of the lossy variants: tile 0 (top left) and the last
    # (a padded edge tile), by libjpeg-turbo and OpenJPEG through tifffile/imagecodecs.
    for name in ["small-jpeg.svs", "small-jpeg-bigtiff.svs", "small-jpeg-rgb.svs", "small-j2k-ycbcr.svs", "small-jpeg.tif", "tumour.svs"]:
        with tifffile.TiffFile(OUT / name) as tif:
            page = tif.pages[0]
            fh = tif.filehandle
            for index in sorted({0, len(page.dataoffsets) // 2, len(page.dataoffsets) - 1}):
                fh.seek(page.dataoffsets[index])
                raw = fh.read(page.databytecounts[index])
                if name == "small-jpeg-rgb.svs":
                    # libjpeg would take these components for YCbCr; Photometric says RGB.
                    tile = imagecodecs.jpeg8_decode(raw, tables=page.jpegtables, colorspace="RGB", outcolorspace="RGB")
                elif name == "small-j2k-ycbcr.svs":
                    tile = ycbcr_to_rgb(imagecodecs.jpeg2k_decode(raw))
                else:
                    tile = page.decode(raw, index, jpegtables=page.jpegtables)[0]
                    tile = np.asarray(tile).reshape(tile.shape[-3:])
                Image.fromarray(tile).save(OUT / "refs" / f"{name}.tile{index}.png")

    write_dicom(OUT / "small-jpeg.svs", OUT / "small-dicom")
    write_refused(OUT / "refused", OUT / "small-jpeg.svs")
    level0 = OUT / "small-dicom" / "level-0.dcm"
    dicom_variant(level0, OUT / "refused" / "sparse.dcm", sparse=True)
    dicom_variant(level0, OUT / "refused" / "jpegls.dcm", syntax="1.2.840.10008.1.2.4.80")
    dicom_variant(level0, OUT / "refused" / "htj2k.dcm", syntax="1.2.840.10008.1.2.4.201")

    (OUT / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
