//! The slide reader, tissue mask and tiling on the synthetic slides of `tests/slides/generate.py`
//! (committed under `tests/slides/data`).
//!
//! - Lossless variants (deflate, LZW, JPEG 2000 33005 reversible) decode to the source pixels
//!   exactly, on every tile of level 0.
//! - Lossy variants match a reference decoder tile for tile: libjpeg-turbo (through imagecodecs)
//!   for JPEG within ±`JPEG_TOLERANCE` (6; 4 measured) per sample (zune-jpeg and libjpeg-turbo round their IDCT
//!   and chroma upsampling differently) with a mean difference under 0.5; OpenJPEG + a float
//!   YCbCr→RGB for Aperio's 33003 within ±1 (rounding of the colour transform).
//! - The tissue mask matches the painted tissue with IoU ≥ 0.9.
//! - Every refused format is refused with its own name.

use std::path::{Path, PathBuf};

use model_wasm::slide::{self, Bytes, DiskFile, Slide, TissueMask, Tiling, TilingOptions};
use model_wasm::{Error, Exif};

const JPEG_TOLERANCE: u8 = 6;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("slides/data")
}

fn open(name: &str) -> Slide {
    let path = data().join(name);
    Slide::open(name, DiskFile::open(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn png(path: &Path) -> model_wasm::Rgb8 {
    model_wasm::preprocess::decode(&std::fs::read(path).unwrap(), "ref", Exif::Ignore).unwrap()
}

fn open_dicom(dir: &str) -> Slide {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(data().join(dir)).unwrap() {
        files.push(DiskFile::open(&entry.unwrap().path()).unwrap());
    }
    Slide::open_dicom(dir, files).unwrap_or_else(|e| panic!("{dir}: {e}"))
}

/// (max, mean) absolute difference.
fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
    let mean = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as f64).sum::<f64>() / a.len() as f64;
    (max, mean)
}

#[test]
fn levels_and_metadata_of_an_aperio_svs() {
    let s = open("tumour.svs");
    assert_eq!(s.format, slide::Format::Svs);
    let sizes: Vec<_> = s.levels.iter().map(|l| (l.width, l.height)).collect();
    assert_eq!(sizes, [(3072, 2304), (768, 576), (192, 144)]);
    assert_eq!(s.mpp, Some(0.25));
    assert_eq!(s.magnification, Some(40.0));
    assert!((s.levels[2].downsample - 16.0).abs() < 1e-9);
    let kinds: Vec<_> = s.associated.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, ["thumbnail", "label", "macro"], "label and macro are listed, never levels");
    // Opening reads the directories only, not the tiles.
    assert_eq!(s.bytes_read(), 0);
}

#[test]
fn lossless_variants_decode_to_the_source_exactly() {
    let source = png(&data().join("small-source.png"));
    for name in ["small-deflate.tif", "small-lzw.tif", "small-j2k-rgb.svs"] {
        let s = open(name);
        assert_eq!((s.width(), s.height()), (520, 390), "{name}");
        let got = s.region(0, 0, 0, 520, 390).unwrap();
        assert!(got.data == source.data, "{name}: level 0 differs from the source pixels: {:?}", diff(&got.data, &source.data));
        assert!((s.mpp.unwrap() - 0.25).abs() < 1e-6, "{name}: mpp {:?}", s.mpp);
    }
}

#[test]
fn lossy_variants_match_the_reference_decoder() {
    for (name, tolerance, mean_limit) in [
        ("small-jpeg.svs", JPEG_TOLERANCE, 0.5),
        ("small-jpeg-bigtiff.svs", JPEG_TOLERANCE, 0.5),
        ("small-jpeg-rgb.svs", JPEG_TOLERANCE, 0.5),
        ("small-jpeg.tif", JPEG_TOLERANCE, 0.5),
        ("small-j2k-ycbcr.svs", 1, 0.05),
        ("tumour.svs", JPEG_TOLERANCE, 0.5),
    ] {
        let s = open(name);
        let l = &s.levels[0];
        let mut checked = 0;
        for entry in std::fs::read_dir(data().join("refs")).unwrap() {
            let p = entry.unwrap().path();
            let file = p.file_name().unwrap().to_string_lossy().to_string();
            let Some(index) = file.strip_prefix(&format!("{name}.tile")).and_then(|r| r.strip_suffix(".png")) else { continue };
            let index: u32 = index.parse().unwrap();
            let (tx, ty) = (index % l.tiles_across(), index / l.tiles_across());
            let reference = png(&p);
            let ours = s.tile(0, tx, ty).unwrap();
            let (max, mean) = diff(&ours, &reference.data);
            eprintln!("{name} tile {index}: max {max}, mean {mean:.3}");
            assert!(max <= tolerance && mean < mean_limit, "{name} tile {index}: max {max}, mean {mean:.3}");
            checked += 1;
        }
        assert!(checked >= 2, "{name}: {checked} reference tiles");
    }
}

#[test]
fn every_variant_reads_the_same_picture() {
    // All small variants hold one picture: lossy ones stay close to it everywhere.
    let source = png(&data().join("small-source.png"));
    for name in ["small-jpeg.svs", "small-jpeg-bigtiff.svs", "small-jpeg-rgb.svs", "small-jpeg.tif", "small-j2k-ycbcr.svs"] {
        let s = open(name);
        let got = s.region(0, 0, 0, 520, 390).unwrap();
        let (_, mean) = diff(&got.data, &source.data);
        assert!(mean < 10.0, "{name}: mean difference to the source {mean:.2}");
        // Level 1 is half the size.
        assert_eq!((s.levels[1].width, s.levels[1].height), (260, 195), "{name}");
    }
    let d = open_dicom("small-dicom");
    assert_eq!(d.format, slide::Format::Dicom);
    assert_eq!((d.width(), d.height()), (520, 390));
    assert!((d.mpp.unwrap() - 0.25).abs() < 1e-6, "{:?}", d.mpp);
    let got = d.region(0, 0, 0, 520, 390).unwrap();
    let (_, mean) = diff(&got.data, &source.data);
    assert!(mean < 10.0, "DICOM: mean difference to the source {mean:.2}");
    // The DICOM frames are the SVS tiles, copied as they are (wsidicomizer does not re-encode).
    let svs = open("small-jpeg.svs").region(0, 0, 0, 520, 390).unwrap();
    assert_eq!(diff(&got.data, &svs.data).0, 0, "DICOM frames decode like the SVS tiles they came from");
}

#[test]
fn regions_outside_the_slide_are_white_and_tiles_are_read_lazily() {
    let s = open("tumour.svs");
    let r = s.region(0, -10, -10, 20, 20).unwrap();
    assert_eq!(&r.data[..3], &[255, 255, 255]);
    let before = s.bytes_read();
    s.region(0, 1030, 1030, 100, 100).unwrap();
    let one_tile = s.bytes_read() - before;
    assert!(one_tile > 0 && one_tile < 256 << 10, "one tile read: {one_tile} bytes");
    s.region(0, 1030, 1030, 100, 100).unwrap();
    assert_eq!(s.bytes_read() - before, one_tile, "the second read comes from the cache");
}

#[test]
fn refused_formats_are_named() {
    let cases = [
        ("slide.ndpi", "Hamamatsu NDPI"),
        ("slide.mrxs", "3DHISTECH MRXS"),
        ("slide.isyntax", "Philips iSyntax"),
        ("slide.czi", "Zeiss CZI"),
        ("slide.vsi", "Olympus VSI"),
        ("slide.scn", "Leica SCN"),
        ("pyramid.ome.tif", "OME-TIFF"),
        ("fluorescence.tif", "fluorescence"),
        ("jpegxr.tif", "JPEG XR"),
        ("sparse.dcm", "TILED_SPARSE"),
        ("jpegls.dcm", "JPEG-LS"),
        ("htj2k.dcm", "HTJ2K"),
        ("truncated.svs", "truncated"),
    ];
    for (file, expect) in cases {
        let path = data().join("refused").join(file);
        let err = Slide::open(file, DiskFile::open(&path).unwrap()).expect_err(file);
        let msg = err.to_string();
        assert!(msg.contains(expect) && msg.contains(file), "{file}: {msg}");
        assert!(matches!(err, Error::Slide { .. }), "{file}: {err:?}");
    }
    // Refused by content, whatever the name says.
    let czi = std::fs::read(data().join("refused/slide.czi")).unwrap();
    let err = Slide::open("renamed.tif", Bytes::source("renamed.tif", czi)).unwrap_err().to_string();
    assert!(err.contains("Zeiss CZI"), "{err}");
    let ndpi = std::fs::read(data().join("refused/slide.ndpi")).unwrap();
    let err = Slide::open("renamed.tif", Bytes::source("renamed.tif", ndpi)).unwrap_err().to_string();
    assert!(err.contains("NDPI"), "{err}");
}

#[test]
fn a_corrupt_tile_is_an_error_for_that_tile() {
    let s = open("refused/corrupt-tile.svs");
    let l = &s.levels[0];
    let (tx, ty) = (5 % l.tiles_across(), 5 / l.tiles_across());
    let err = s.tile(0, tx, ty).unwrap_err().to_string();
    assert!(err.contains("corrupt") && err.contains(&format!("tile {tx},{ty}")), "{err}");
    // Its neighbours still decode.
    s.tile(0, 0, 0).unwrap();
}

#[test]
fn tissue_mask_matches_the_painted_tissue() {
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data().join("truth.json")).unwrap()).unwrap();
    let t = &truth["tumour.svs"];
    let cell = t["cell"].as_f64().unwrap();
    let s = open("tumour.svs");
    let (img, downsample) = slide::overview(&s, 1024).unwrap();
    let mask = TissueMask::from_overview(&img, downsample);
    let (mut inter, mut union) = (0u64, 0u64);
    for y in 0..mask.height {
        for x in 0..mask.width {
            let (cx, cy) = (((x as f64 + 0.5) * downsample / cell) as usize, ((y as f64 + 0.5) * downsample / cell) as usize);
            let truth = t["tissue"][cy][cx].as_i64().unwrap() == 1;
            let ours = mask.data[(y * mask.width + x) as usize] == 1;
            inter += (truth && ours) as u64;
            union += (truth || ours) as u64;
        }
    }
    let iou = inter as f64 / union as f64;
    eprintln!("tissue mask IoU {iou:.3} (threshold {}, {}x{} at downsample {downsample:.2})", mask.threshold, mask.width, mask.height);
    assert!(iou >= 0.9, "IoU {iou:.3}");
}

#[test]
fn tiling_keeps_tissue_patches_at_the_target_resolution() {
    let s = open("tumour.svs");
    let (img, downsample) = slide::overview(&s, 1024).unwrap();
    let mask = TissueMask::from_overview(&img, downsample);
    let options = TilingOptions { target_mpp: 0.5, patch: 96, overlap: 0.0, min_tissue: 0.5, mpp_override: None };
    let plan = Tiling::plan(&s, &mask, &options).unwrap();
    // 0.5 µm/px from a 0.25 µm/px level 0: level 0 (level 1 is 1 µm/px), 192 px squares.
    assert_eq!((plan.level, plan.read_size), (0, 192));
    assert_eq!(plan.candidates, 16 * 12);
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data().join("truth.json")).unwrap()).unwrap();
    let tissue_cells = truth["tumour.svs"]["tissue"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter()).filter(|v| v.as_i64() == Some(1)).count();
    let kept = plan.patches.len();
    eprintln!("{kept} patches kept of {} ({tissue_cells} tissue cells)", plan.candidates);
    assert!((kept as f64 - tissue_cells as f64).abs() <= 0.1 * tissue_cells as f64, "{kept} vs {tissue_cells}");
    let p = plan.read(&s, &plan.patches[0]).unwrap();
    assert_eq!((p.width, p.height), (96, 96));
    // Overlap: half-stride gives about four times the patches.
    let half = Tiling::plan(&s, &mask, &TilingOptions { overlap: 0.5, ..options }).unwrap();
    assert!(half.patches.len() > 3 * kept, "{} vs {kept}", half.patches.len());
    // A slide that does not say its resolution asks for it.
    let mut no_mpp = open("tumour.svs");
    no_mpp.mpp = None;
    let err = Tiling::plan(&no_mpp, &mask, &options).unwrap_err().to_string();
    assert!(err.contains("microns per pixel"), "{err}");
    let given = Tiling::plan(&no_mpp, &mask, &TilingOptions { mpp_override: Some(0.25), ..options }).unwrap();
    assert_eq!(given.patches, plan.patches);
}


/// Text search over a slide's patches with the demo model: "adenocarcinoma" finds the painted
/// tumour. Patches overlap by half, so a patch straddling a tumour border counts as inside when
/// its centre is.
#[test]
fn text_search_finds_the_tumour_region() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let clip = pollster::block_on(model_wasm::Clip::load_dir(&root.join("public/models/demo"), model_wasm::BackendChoice::Cpu)).unwrap();
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data().join("truth.json")).unwrap()).unwrap();
    let t = &truth["tumour.svs"];
    let cell = t["cell"].as_f64().unwrap();
    let s = open("tumour.svs");
    let options = TilingOptions { patch: clip.input_size(), overlap: 0.5, ..Default::default() };
    let (_, _, plan) = slide::prepare(&s, &options).unwrap();
    let mut embeddings = Vec::new();
    for chunk in plan.patches.chunks(32) {
        let pixels: Vec<_> = chunk.iter().map(|p| clip.pixels_of(&plan.read(&s, p).unwrap())).collect();
        embeddings.extend(pollster::block_on(clip.embed_images(&pixels)).unwrap());
    }
    let inside = |p: &slide::Patch| {
        let (cx, cy) = (((p.x + p.size / 2) as f64 / cell) as usize, ((p.y + p.size / 2) as f64 / cell) as usize);
        t["tumour"][cy][cx].as_i64() == Some(1)
    };
    let tumour_patches = plan.patches.iter().filter(|p| inside(p)).count();
    for query in ["adenocarcinoma", "an H&E image of colorectal adenocarcinoma epithelium."] {
        let (_, text) = pollster::block_on(clip.embed_texts(&[query])).unwrap();
        let mut scored: Vec<(f32, &slide::Patch)> =
            embeddings.iter().zip(&plan.patches).map(|(e, p)| (model_wasm::dot(e, &text[0]), p)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let hits = scored[..50].iter().filter(|(_, p)| inside(p)).count();
        eprintln!("\"{query}\": {hits} of the top 50 patches inside the tumour ({tumour_patches} of {} patches are)", plan.patches.len());
        assert!(hits >= 40, "\"{query}\": {hits}/50 in the tumour");
    }
}

/// Damaged copies of every variant (bytes flipped in the headers or anywhere, or cut short):
/// opening, reading every tile and planning may fail, with an error, and never panic.
#[test]
fn damaged_copies_are_errors_never_panics() {
    let files = [
        "small-jpeg.svs",
        "small-jpeg-bigtiff.svs",
        "small-jpeg-rgb.svs",
        "small-lzw.tif",
        "small-deflate.tif",
        "small-j2k-ycbcr.svs",
        "small-dicom/level-0.dcm",
    ];
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let options = TilingOptions { patch: 64, ..Default::default() };
    let (mut opened, mut refused) = (0, 0);
    for file in files {
        let data = std::fs::read(data().join(file)).unwrap();
        for copy in 0..60 {
            let mut bad = data.clone();
            match copy % 3 {
                0 => bad.truncate((next() % data.len() as u64) as usize),
                1 => {
                    for _ in 0..1 + next() % 8 {
                        let at = (next() % 4096.min(data.len()) as u64) as usize;
                        bad[at] = next() as u8;
                    }
                }
                _ => {
                    for _ in 0..1 + next() % 8 {
                        let at = (next() % data.len() as u64) as usize;
                        bad[at] = next() as u8;
                    }
                }
            }
            let name = file.rsplit('/').next().unwrap();
            let run = std::panic::catch_unwind(|| match Slide::open(name, Bytes::source(name, bad)) {
                Ok(s) => {
                    for (level, l) in s.levels.iter().enumerate() {
                        for ty in 0..l.tiles_down() {
                            for tx in 0..l.tiles_across() {
                                let _ = s.tile(level, tx, ty);
                            }
                        }
                    }
                    let _ = slide::prepare(&s, &options).map(|(_, _, plan)| plan.patches.iter().filter(|p| plan.read(&s, p).is_ok()).count());
                    true
                }
                Err(e) => {
                    assert!(matches!(e, Error::Slide { .. }), "{e:?}");
                    false
                }
            });
            match run {
                Ok(true) => opened += 1,
                Ok(false) => refused += 1,
                Err(_) => panic!("{file}, damaged copy {copy}: the reader panicked"),
            }
        }
    }
    eprintln!("{} damaged copies: {opened} opened (damage in tile data), {refused} refused", opened + refused);
    assert!(refused > 50 && opened > 50, "{opened} opened, {refused} refused");
}
