//! Cutting a slide into patches for the encoder: the level for a target resolution, a grid of
//! patches of the model's input size with a chosen overlap, kept where the tissue mask covers
//! enough of them.

use super::{Problem, Slide, TissueMask};
use crate::preprocess::{Resample, Rgb8, resize};
use crate::{Error, Result};

/// At most this many grid positions (a 200,000-px square slide at 0.5 µm/px from 0.25 µm/px
/// level 0 with 224-px patches has 2 million).
pub const MAX_POSITIONS: u64 = 50_000_000;

/// What the user chooses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TilingOptions {
    /// Microns per pixel the patches are made at (0.5 ≈ 20x).
    pub target_mpp: f64,
    /// Patch side in pixels at the target resolution: the model's input size.
    pub patch: u32,
    /// Fraction of a patch shared with its neighbour, 0 ≤ overlap < 1.
    pub overlap: f64,
    /// A patch is kept when at least this fraction of it is tissue.
    pub min_tissue: f64,
    /// The slide's level-0 resolution when the file does not say (asked of the user).
    pub mpp_override: Option<f64>,
}

impl Default for TilingOptions {
    fn default() -> Self {
        Self { target_mpp: 0.5, patch: 224, overlap: 0.0, min_tissue: 0.5, mpp_override: None }
    }
}

/// One patch: its square in level-0 pixels and how much of it is tissue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patch {
    pub x: u32,
    pub y: u32,
    /// Side of the square in level-0 pixels.
    pub size: u32,
    pub tissue: f32,
}

/// The plan for a slide: which level is read, how large a square of it makes a patch, and the
/// patches kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiling {
    pub level: usize,
    /// Microns per pixel of level 0 (from the file or the user).
    pub mpp: f64,
    /// Side of a patch's square in the chosen level's pixels (resized to `patch` when it differs).
    pub read_size: u32,
    pub patch: u32,
    pub patches: Vec<Patch>,
    /// How many grid positions there were before the tissue filter.
    pub candidates: usize,
}

impl Tiling {
    /// Plan the patches of `slide` over `mask`.
    pub fn plan(slide: &Slide, mask: &TissueMask, options: &TilingOptions) -> Result<Self> {
        let err = |p| Error::Slide { name: slide.name.clone(), problem: p };
        let mpp = options.mpp_override.or(slide.mpp).ok_or_else(|| err(Problem::NoResolution))?;
        let valid = (1e-3..100.0).contains(&mpp)
            && (1e-3..100.0).contains(&options.target_mpp)
            && options.patch > 0
            && (0.0..0.95).contains(&options.overlap);
        if !valid {
            return Err(Error::Input(format!(
                "tiling: mpp {mpp}, target {} µm/px, patch {}, overlap {}",
                options.target_mpp, options.patch, options.overlap
            )));
        }
        // The coarsest level that is still at least as fine as the target (never upsample
        // when a finer level exists); level 0 when the target is finer than the slide.
        let level = (0..slide.levels.len())
            .rev()
            .find(|&i| mpp * slide.levels[i].downsample <= options.target_mpp * 1.01)
            .unwrap_or(0);
        let l = &slide.levels[level];
        let level_mpp = mpp * l.downsample;
        let read_size = ((options.patch as f64 * options.target_mpp / level_mpp).round() as u32).max(1);
        if read_size > 8 * options.patch {
            return Err(err(Problem::Unsupported(format!(
                "the slide has no level near {} µm/px (the nearest is {level_mpp:.3} µm/px): a patch would be {read_size} px wide; choose a finer resolution",
                options.target_mpp
            ))));
        }
        let stride = ((read_size as f64 * (1.0 - options.overlap)).round() as u64).max(1);
        let (width, height) = (l.width as u64, l.height as u64);
        let positions = width.div_ceil(stride) * height.div_ceil(stride);
        if positions > MAX_POSITIONS {
            return Err(err(Problem::Unsupported(format!(
                "{positions} patch positions at {} µm/px with overlap {}: choose a coarser resolution or less overlap",
                options.target_mpp, options.overlap
            ))));
        }
        let ds = l.downsample;
        let size0 = (read_size as f64 * ds).round() as u32;
        let mut patches = Vec::new();
        let mut candidates = 0;
        // Bands of columns, top to bottom within a band: neighbouring patches share tiles while
        // those tiles are still in the cache.
        let band = (l.tile_width as u64 * 8).max(2048).div_ceil(stride).max(1) * stride;
        let mut bx = 0u64;
        while bx < width {
            let mut y = 0u64;
            while y < height {
                let mut x = bx;
                while x < (bx + band).min(width) {
                    candidates += 1;
                    let (x0, y0) = ((x as f64 * ds).round(), (y as f64 * ds).round());
                    let tissue = mask.fraction(x0, y0, size0 as f64);
                    if tissue >= options.min_tissue {
                        patches.push(Patch { x: x0 as u32, y: y0 as u32, size: size0, tissue: tissue as f32 });
                    }
                    x += stride;
                }
                y += stride;
            }
            bx += band;
        }
        Ok(Self { level, mpp, read_size, patch: options.patch, patches, candidates })
    }

    /// The RGB pixels of `patch`, `patch` x `patch`.
    pub fn read(&self, slide: &Slide, patch: &Patch) -> Result<Rgb8> {
        let ds = slide.levels[self.level].downsample;
        let (x, y) = ((patch.x as f64 / ds).round() as i64, (patch.y as f64 / ds).round() as i64);
        let img = slide.region(self.level, x, y, self.read_size, self.read_size)?;
        Ok(if self.read_size == self.patch { img } else { resize(&img, self.patch, self.patch, Resample::Bicubic) })
    }
}
