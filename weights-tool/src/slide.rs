//! `embed --slide`: open a whole-slide image with the reader the app's worker uses, find the
//! tissue, cut it into patches at the target resolution and embed every patch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use model_wasm::Clip;
use model_wasm::collection::{self, Origin};
use model_wasm::slide::{self, DiskFile, Slide, TilingOptions};
use serde::Serialize;

#[derive(Serialize)]
pub struct SlideOut {
    pub path: String,
    pub format: String,
    /// Microns per pixel of the patches (the target) and of the slide's level 0.
    pub mpp: f64,
    pub slide_mpp: f64,
    /// The level the patches were read from.
    pub level: usize,
    pub width: u32,
    pub height: u32,
    /// Fraction of the slide that is tissue, and the saturation threshold that found it.
    pub tissue: f64,
    pub tissue_threshold: u8,
    /// Patches that could not be read (a damaged tile); the others are embedded.
    pub unreadable: usize,
    pub patches: Vec<PatchOut>,
}

#[derive(Serialize)]
pub struct PatchOut {
    /// Level-0 pixels.
    pub x: u32,
    pub y: u32,
    pub size: u32,
    pub tissue: f32,
    pub embedding: Vec<f32>,
}

/// Open a slide: a file, or a directory holding one DICOM series.
pub fn open(path: &Path) -> anyhow::Result<Slide> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    if path.is_dir() {
        let mut files = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            files.push(DiskFile::open(&p)?);
        }
        return Ok(Slide::open_dicom(&name, files)?);
    }
    Ok(Slide::open(&name, DiskFile::open(path)?)?)
}

/// Tile and embed one slide; with `pixels_out`, write each patch as `<stem>_<x>_<y>.png`; with
/// `items`, also append each patch as a collection item (thumbnail, hash and origin as the app
/// makes them; ids are given later).
pub async fn embed(
    clip: &Clip,
    path: &Path,
    options: &TilingOptions,
    batch: usize,
    pixels_out: Option<&Path>,
    mut items: Option<&mut Vec<collection::Item>>,
) -> anyhow::Result<SlideOut> {
    let slide = open(path)?;
    let fingerprint = slide.fingerprint()?;
    let started = Instant::now();
    let (_, mask, plan) = slide::prepare(&slide, options)?;
    let stem = path.file_stem().map_or("slide".into(), |s| s.to_string_lossy().into_owned());
    let mut patches = Vec::with_capacity(plan.patches.len());
    let total = plan.patches.len();
    let mut unreadable = 0;
    for chunk in plan.patches.chunks(batch.max(1)) {
        let mut pixels = Vec::with_capacity(chunk.len());
        let mut thumbs = Vec::new();
        let mut kept = Vec::with_capacity(chunk.len());
        for p in chunk {
            // A damaged tile loses the patches on it, not the slide.
            let rgb = match plan.read(&slide, p) {
                Ok(rgb) => rgb,
                Err(e) => {
                    if unreadable == 0 {
                        eprintln!("\nweights-tool: {e:#}");
                    }
                    unreadable += 1;
                    continue;
                }
            };
            kept.push(*p);
            if items.is_some() {
                thumbs.push(collection::thumbnail(&rgb).map_err(anyhow::Error::msg)?);
            }
            if let Some(dir) = pixels_out {
                let file = dir.join(format!("{stem}_{}_{}.png", p.x, p.y));
                image::save_buffer(&file, &rgb.data, rgb.width, rgb.height, image::ExtendedColorType::Rgb8)
                    .with_context(|| format!("writing {}", file.display()))?;
            }
            pixels.push(clip.pixels_of(&rgb));
        }
        if kept.is_empty() {
            continue;
        }
        let embeddings = clip.embed_images(&pixels).await?;
        if let Some(items) = items.as_deref_mut() {
            for ((p, e), thumb) in kept.iter().zip(&embeddings).zip(thumbs) {
                items.push(collection::Item {
                    id: 0,
                    hash: slide::patch_hash(&fingerprint, p),
                    name: format!("{} ({}, {})", slide.name, p.x, p.y),
                    thumb,
                    embedding: e.clone(),
                    origin: Some(Origin { slide: slide.name.clone(), x: p.x, y: p.y, size: p.size }),
                });
            }
        }
        patches.extend(kept.iter().zip(embeddings).map(|(p, embedding)| PatchOut { x: p.x, y: p.y, size: p.size, tissue: p.tissue, embedding }));
        let secs = started.elapsed().as_secs_f64();
        eprint!("\r{}: patches {} of {total}, {:.1}/s   ", slide.name, patches.len(), patches.len() as f64 / secs.max(1e-9));
    }
    eprintln!();
    Ok(SlideOut {
        path: path.display().to_string(),
        format: slide.format.name().to_string(),
        mpp: options.target_mpp,
        slide_mpp: plan.mpp,
        level: plan.level,
        width: slide.width(),
        height: slide.height(),
        tissue: mask.coverage(),
        tissue_threshold: mask.threshold,
        unreadable,
        patches,
    })
}
