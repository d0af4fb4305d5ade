#!/usr/bin/env python3
"""Procedural H&E-like tiles for the nine tissue classes of the Kather colon dataset (NCT-CRC-HE).

A teaching toy, not pathology: each class is drawn with its textbook visual signature so a small
CLIP can learn to tell them apart from captions. Tiles are painted in stain space (haematoxylin
and eosin optical densities) and turned into RGB by Beer-Lambert with per-tile stain vectors, so
stain colour varies as it does between labs. Every tile also varies in scale, rotation, blur and
noise. Deterministic: a tile is a pure function of (seed, class).

    from tiles import CLASSES, tile, caption
    img = tile(np.random.default_rng(0), "lymphocytes")      # 224x224 PIL RGB
    text = caption(np.random.default_rng(0), "lymphocytes")
"""

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import cKDTree

SIZE = 224

# The class names exactly as PLIP's Kather evaluation spells them.
CLASSES = [
    "adipose tissue",
    "background",
    "debris",
    "lymphocytes",
    "mucus",
    "smooth muscle",
    "normal colon mucosa",
    "cancer-associated stroma",
    "colorectal adenocarcinoma epithelium",
]

# Ruifrok & Johnston optical-density vectors (R, G, B) for haematoxylin and eosin.
OD_H = np.array([0.65, 0.70, 0.29])
OD_E = np.array([0.07, 0.99, 0.11])


# ---------------------------------------------------------------- drawing helpers


class Canvas:
    """Two stain-density layers (H, E) plus a mask layer, drawn with PIL at 2x and smoothed."""

    def __init__(self, rng, pad=32):
        self.rng = rng
        self.pad = pad
        self.n = SIZE + 2 * pad  # drawn larger, then rotated and cropped: no empty corners
        self.h = np.zeros((self.n, self.n), np.float32)
        self.e = np.zeros((self.n, self.n), np.float32)

    def layer(self):
        img = Image.new("L", (self.n, self.n), 0)
        return img, ImageDraw.Draw(img)

    @staticmethod
    def as_float(img):
        return np.asarray(img, np.float32) / 255.0


def blob(rng, cx, cy, a, b, theta, irregular=0.0, points=18):
    """Polygon of a (possibly irregular) ellipse with semi-axes a, b rotated by theta."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    r = 1.0 + irregular * rng.uniform(-1, 1, points)
    r = (r + np.roll(r, 1) + np.roll(r, -1)) / 3  # smooth the outline a little
    x, y = a * r * np.cos(t), b * r * np.sin(t)
    c, s = np.cos(theta), np.sin(theta)
    return [(cx + c * xi - s * yi, cy + s * xi + c * yi) for xi, yi in zip(x, y)]


def smooth_noise(rng, n, sigma, octaves=1):
    """Low-frequency noise in [0, 1]."""
    out = np.zeros((n, n), np.float32)
    for o in range(octaves):
        out += ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), sigma / 2**o) * 0.5**o
    out -= out.min()
    return out / max(out.max(), 1e-6)


def nuclei(rng, cv, centres, size, elong=1.0, irregular=0.15, strength=1.0, theta=None, jitter=0.25):
    img, d = cv.layer()
    for cx, cy in centres:
        r = size * rng.uniform(1 - jitter, 1 + jitter)
        th = rng.uniform(0, np.pi) if theta is None else theta + rng.normal(0, 0.15)
        d.polygon(blob(rng, cx, cy, r * elong, r, th, irregular), fill=int(255 * rng.uniform(0.75, 1.0)))
    cv.h += strength * cv.as_float(img)


def poisson_points(rng, n, count, min_dist):
    """Up to `count` points, roughly min_dist apart: a jittered grid, randomly thinned."""
    k = int(np.ceil(n / min_dist))
    gy, gx = np.mgrid[0:k, 0:k].astype(np.float64)
    pts = (np.stack([gx.ravel(), gy.ravel()], 1) + 0.5 + rng.uniform(-0.3, 0.3, (k * k, 2))) * min_dist
    pts += rng.uniform(0, min_dist)  # a random grid origin
    pts = pts[rng.permutation(len(pts))[:count]]
    return [tuple(p) for p in pts]


def voronoi_edges(n, seeds, width):
    """1 on the borders between Voronoi cells of `seeds`, 0 inside."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    d, _ = cKDTree(np.array(seeds)).query(np.stack([xx.ravel(), yy.ravel()], 1), k=2)
    d = d.reshape(n, n, 2)
    return np.clip(1 - (d[..., 1] - d[..., 0]) / width, 0, 1), d[..., 0]


def fibres(rng, cv, n, angle, spacing, waviness, wave_len, thickness, strength):
    """Parallel (wavy) fibres along `angle`: a stripe pattern in E."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = c * xx + s * yy  # along the fibres
    v = -s * xx + c * yy  # across
    warp = smooth_noise(rng, n, 12) * 2 - 1
    v = v + waviness * np.sin(2 * np.pi * u / wave_len + rng.uniform(0, 2 * np.pi)) + 6 * warp
    phase = (v / spacing) % 1.0
    stripe = np.clip(1 - np.abs(phase - 0.5) * 2 / thickness, 0, 1)
    cv.e += strength * stripe
    return u, v


# ---------------------------------------------------------------- the nine classes


def adipose(rng, cv):
    n = cv.n
    r = rng.uniform(22, 38)
    seeds = poisson_points(rng, n, 400, r * 1.5)
    edges, _ = voronoi_edges(n, seeds, rng.uniform(1.2, 2.2))
    cv.e += 0.9 * edges
    # a few flattened nuclei squeezed against membranes
    few = [seeds[i] for i in rng.choice(len(seeds), size=min(len(seeds), rng.integers(2, 7)), replace=False)]
    nuclei(rng, cv, [(x + r * 0.7, y) for x, y in few], 3.0, elong=2.2, strength=0.9)
    cv.e += 0.03 * smooth_noise(rng, n, 20)


def background(rng, cv):
    n = cv.n
    cv.e += rng.uniform(0.0, 0.06) * smooth_noise(rng, n, 40, 2)
    cv.h += rng.uniform(0.0, 0.04) * smooth_noise(rng, n, 30, 2)
    if rng.random() < 0.5:  # dust and specks on the glass
        img, d = cv.layer()
        for _ in range(rng.integers(1, 6)):
            x, y = rng.uniform(0, n, 2)
            d.polygon(blob(rng, x, y, rng.uniform(1, 4), rng.uniform(1, 3), rng.uniform(0, np.pi), 0.4), fill=200)
        cv.h += 0.3 * cv.as_float(img)
    cv.grey = rng.uniform(0.0, 0.25)  # some scanners leave a grey cast on empty glass


def debris(rng, cv):
    n = cv.n
    base = smooth_noise(rng, n, 6, 3)
    cv.e += 0.55 * np.clip(base * 1.6 - 0.3, 0, 1)
    cv.h += 0.25 * np.clip(smooth_noise(rng, n, 8, 2) * 1.5 - 0.5, 0, 1)
    # karyorrhexis: many small irregular dark fragments of varying size
    pts = rng.uniform(0, n, (int(rng.uniform(120, 260)), 2))
    img, d = cv.layer()
    for x, y in pts:
        rr = rng.uniform(0.8, 3.5)
        d.polygon(blob(rng, x, y, rr * rng.uniform(0.6, 1.6), rr, rng.uniform(0, np.pi), 0.5, 8), fill=int(rng.uniform(120, 255)))
    cv.h += 0.9 * cv.as_float(img)
    # pale holes
    cv.e *= 1 - 0.7 * (smooth_noise(rng, n, 10) > 0.7)


def lymphocytes(rng, cv):
    n = cv.n
    size = rng.uniform(3.2, 4.6)
    pts = poisson_points(rng, n, 2000, size * rng.uniform(2.0, 2.5))
    cv.e += 0.25 + 0.1 * smooth_noise(rng, n, 15)
    nuclei(rng, cv, pts, size, elong=1.1, irregular=0.08, strength=1.3, jitter=0.15)


def mucus(rng, cv):
    n = cv.n
    wisps = smooth_noise(rng, n, rng.uniform(5, 9), 3)
    streak = ndimage.gaussian_filter(wisps, (1, 6)) if rng.random() < 0.5 else ndimage.gaussian_filter(wisps, (6, 1))
    w = np.clip(streak * 1.8 - 0.5, 0, 1)
    cv.h += rng.uniform(0.18, 0.32) * w  # pale blue-grey
    cv.e += rng.uniform(0.05, 0.12) * w
    # a few floating cells
    pts = rng.uniform(0, n, (int(rng.integers(0, 8)), 2))
    nuclei(rng, cv, pts, 3.5, strength=0.8)


def smooth_muscle(rng, cv):
    n = cv.n
    angle = rng.uniform(0, np.pi)
    spacing = rng.uniform(4, 7)
    u, v = fibres(rng, cv, n, angle, spacing, waviness=rng.uniform(0, 2), wave_len=80, thickness=0.8, strength=0.55)
    cv.e += 0.45
    # cigar-shaped nuclei aligned with the fibres
    pts = poisson_points(rng, n, 180, rng.uniform(14, 20))
    nuclei(rng, cv, pts, rng.uniform(2.0, 2.8), elong=rng.uniform(3.5, 5), irregular=0.05, strength=1.0, theta=angle)


def normal_mucosa(rng, cv):
    n = cv.n
    cv.e += 0.35 + 0.15 * smooth_noise(rng, n, 10)  # lamina propria
    # scattered inflammatory cells in the lamina propria
    nuclei(rng, cv, rng.uniform(0, n, (int(rng.uniform(60, 120)), 2)), 2.5, strength=0.8)
    r = rng.uniform(22, 32)
    crypts = poisson_points(rng, n, 60, r * 2.4)
    lumen, dl = cv.layer()
    epi, de = cv.layer()
    nuc, dn = cv.layer()
    goblet, dg = cv.layer()
    for cx, cy in crypts:
        rr = r * rng.uniform(0.85, 1.1)
        de.polygon(blob(rng, cx, cy, rr, rr * rng.uniform(0.85, 1.0), rng.uniform(0, np.pi), 0.03, 32), fill=255)
        dl.polygon(blob(rng, cx, cy, rr * 0.35, rr * 0.3, rng.uniform(0, np.pi), 0.05, 16), fill=255)
        k = int(2 * np.pi * rr * 0.85 / 6)
        for j in range(k):  # one orderly ring of basal nuclei
            t = 2 * np.pi * j / k
            x, y = cx + rr * 0.8 * np.cos(t), cy + rr * 0.8 * np.sin(t)
            dn.polygon(blob(rng, x, y, 3.0, 1.8, t, 0.05, 10), fill=230)
            if j % 2 == 0:  # goblet cells: pale mucin vacuoles between nuclei and lumen
                x, y = cx + rr * 0.57 * np.cos(t), cy + rr * 0.57 * np.sin(t)
                dg.ellipse([x - 3.2, y - 3.2, x + 3.2, y + 3.2], fill=255)
    epi, lumen, goblet = cv.as_float(epi), cv.as_float(lumen), cv.as_float(goblet)
    cv.e = cv.e * (1 - epi) + epi * 0.5
    cv.e *= 1 - 0.9 * goblet
    cv.h += 0.12 * goblet
    cv.e *= 1 - lumen
    cv.h = cv.h * (1 - epi) + 1.1 * cv.as_float(nuc)


def stroma(rng, cv):
    n = cv.n
    angle = rng.uniform(0, np.pi)
    fibres(rng, cv, n, angle, rng.uniform(6, 10), waviness=rng.uniform(4, 8), wave_len=rng.uniform(30, 50), thickness=0.5, strength=0.5)
    cv.e += 0.15 + 0.1 * smooth_noise(rng, n, 20)
    # sparse spindle nuclei, loosely aligned
    pts = poisson_points(rng, n, int(rng.uniform(15, 35)), 20)
    nuclei(rng, cv, pts, rng.uniform(1.8, 2.4), elong=rng.uniform(3, 4.5), irregular=0.1, strength=1.0, theta=angle)


def tumour(rng, cv):
    n = cv.n
    cv.e += 0.35 + 0.1 * smooth_noise(rng, n, 15)
    glands, dg = cv.layer()
    lumen, dl = cv.layer()
    nuc, dn = cv.layer()
    for cx, cy in poisson_points(rng, n, 40, rng.uniform(28, 40)):
        rr = rng.uniform(16, 34)
        dg.polygon(blob(rng, cx, cy, rr * rng.uniform(0.8, 1.4), rr, rng.uniform(0, np.pi), 0.35, 24), fill=255)
        for _ in range(rng.integers(1, 4)):  # irregular, sometimes cribriform lumina
            ox, oy = rng.normal(0, rr * 0.3, 2)
            dl.polygon(blob(rng, cx + ox, cy + oy, rr * rng.uniform(0.12, 0.3), rr * rng.uniform(0.1, 0.25), rng.uniform(0, np.pi), 0.4, 12), fill=255)
    glands_f = cv.as_float(glands)
    # crowded, large, pleomorphic, hyperchromatic nuclei throughout the epithelium
    pts = [p for p in poisson_points(rng, n, 1200, 7.5) if glands_f[int(p[1]) % n, int(p[0]) % n] > 0.5]
    for x, y in pts:
        r = rng.uniform(3.0, 6.0)
        dn.polygon(blob(rng, x, y, r * rng.uniform(1.0, 1.8), r, rng.uniform(0, np.pi), 0.3, 12), fill=int(rng.uniform(170, 255)))
    lumen_f = cv.as_float(lumen) * glands_f
    cv.e = cv.e * (1 - glands_f) + glands_f * 0.4
    cv.h += 1.25 * cv.as_float(nuc) * (1 - lumen_f)
    cv.e *= 1 - lumen_f
    cv.h += 0.15 * glands_f  # basophilic cytoplasm


DRAW = dict(zip(CLASSES, [adipose, background, debris, lymphocytes, mucus, smooth_muscle, normal_mucosa, stroma, tumour]))


def tile(rng: np.random.Generator, cls: str) -> Image.Image:
    cv = Canvas(rng)
    cv.grey = 0.0
    DRAW[cls](rng, cv)
    h, e = cv.h, cv.e
    # rotation (nearest multiples of 90 degrees are free; any angle by interpolation)
    angle = rng.uniform(0, 360)
    h = ndimage.rotate(h, angle, reshape=False, order=1, mode="reflect")
    e = ndimage.rotate(e, angle, reshape=False, order=1, mode="reflect")
    p = cv.pad
    h, e = h[p : p + SIZE, p : p + SIZE], e[p : p + SIZE, p : p + SIZE]
    # optics: a little blur (focus varies), then stain -> RGB with per-tile stain vectors
    sigma = rng.uniform(0.3, 1.3)
    h, e = ndimage.gaussian_filter(h, sigma), ndimage.gaussian_filter(e, sigma)
    od_h = OD_H * rng.uniform(0.8, 1.2, 3)
    od_e = OD_E * rng.uniform(0.8, 1.2, 3)
    h_amt, e_amt = rng.uniform(0.7, 1.3), rng.uniform(0.6, 1.3)
    od = h[..., None] * od_h * h_amt * 1.6 + e[..., None] * od_e * e_amt * 1.1
    rgb = 255 * np.exp(-od)
    rgb = rgb * (1 - cv.grey) + 200 * cv.grey
    rgb = rgb * rng.uniform(0.92, 1.0) + rng.normal(0, rng.uniform(1.5, 5.0), rgb.shape)
    return Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------- captions

SYNONYMS = {
    "adipose tissue": ["adipose tissue", "fat", "fatty tissue", "adipocytes", "mature adipose tissue"],
    "background": ["background", "empty background", "blank slide", "glass without tissue", "no tissue"],
    "debris": ["debris", "necrotic debris", "necrosis", "cellular debris", "necrotic material"],
    "lymphocytes": ["lymphocytes", "a lymphocytic infiltrate", "lymphoid cells", "dense lymphocytes", "immune cells"],
    "mucus": ["mucus", "mucin", "extracellular mucin", "mucinous material", "pools of mucus"],
    "smooth muscle": ["smooth muscle", "muscularis propria", "smooth muscle fibers", "smooth muscle bundles", "muscle"],
    "normal colon mucosa": ["normal colon mucosa", "normal colonic mucosa", "benign colonic crypts", "healthy colon mucosa", "normal mucosa"],
    "cancer-associated stroma": ["cancer-associated stroma", "tumor stroma", "desmoplastic stroma", "fibrous stroma", "stroma"],
    "colorectal adenocarcinoma epithelium": [
        "colorectal adenocarcinoma epithelium",
        "adenocarcinoma",
        "tumor epithelium",
        "colorectal cancer",
        "malignant glands",
    ],
}

ATTRIBUTES = {
    "adipose tissue": ["large empty cells with thin pink membranes", "clear vacuoles separated by thin septa", "big round empty spaces"],
    "background": ["no cells", "empty white glass", "a blank field with no tissue"],
    "debris": ["fragmented nuclear dust", "scattered dark fragments in pink material", "karyorrhectic debris"],
    "lymphocytes": ["dense small round dark nuclei", "sheets of small dark round cells", "packed round blue nuclei"],
    "mucus": ["pale blue-grey wisps", "faint bluish streaks", "pale acellular material"],
    "smooth muscle": ["parallel pink fibers with elongated nuclei", "long cigar-shaped nuclei in pink bundles", "dense aligned eosinophilic fibers"],
    "normal colon mucosa": ["round regular crypts with goblet cells", "orderly glands lined by basal nuclei", "regular round glands"],
    "cancer-associated stroma": ["wavy pink fibers with sparse spindle nuclei", "loose wavy collagen", "sparse spindle cells in pink fibers"],
    "colorectal adenocarcinoma epithelium": [
        "crowded irregular glands with large pleomorphic nuclei",
        "atypical glands with hyperchromatic nuclei",
        "irregular glands with crowded large nuclei",
    ],
}

TEMPLATES = [
    "an H&E image of {s}.",
    "an H&E image of {s}.",
    "{s}.",
    "a histology tile showing {s}.",
    "H&E stained section of {s}",
    "photomicrograph of {s}, H&E",
    "{a}, consistent with {s}.",
    "{s}: {a}.",
    "colon tissue: {s}",
    "a microscope image of {s}",
    "{a}",
    "this tile shows {a}.",
]


def caption(rng: np.random.Generator, cls: str) -> str:
    s = SYNONYMS[cls][0] if rng.random() < 0.4 else str(rng.choice(SYNONYMS[cls]))
    a = str(rng.choice(ATTRIBUTES[cls]))
    text = str(rng.choice(TEMPLATES)).format(s=s, a=a)
    return text.capitalize() if rng.random() < 0.3 else text


if __name__ == "__main__":  # a contact sheet for looking at the classes
    import sys

    rng = np.random.default_rng(0)
    k = 4
    sheet = Image.new("RGB", (SIZE * k, SIZE * len(CLASSES)), "white")
    for i, c in enumerate(CLASSES):
        for j in range(k):
            sheet.paste(tile(rng, c), (j * SIZE, i * SIZE))
    sheet.save(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiles.png")
