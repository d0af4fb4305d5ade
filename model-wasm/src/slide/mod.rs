//! Whole-slide images: open a pyramidal slide lazily, read tiles and regions of any level, find
//! the tissue and cut it into patches for the encoder.
//!
//! - [`Slide::open`] reads Aperio SVS (TIFF and BigTIFF; JPEG tiles with shared JPEGTables, RGB
//!   JPEG tiles, JPEG 2000 33003/33005), generic tiled pyramidal TIFF (JPEG, deflate, LZW) and,
//!   with [`Slide::open_dicom`], a DICOM VL Whole Slide Microscopy series (TILED_FULL; JPEG
//!   baseline, JPEG 2000, uncompressed). Everything else that is a slide format is refused by
//!   name ([`Problem::Refused`]).
//! - Only the bytes asked for are read, through a [`Source`]: a file natively, `Blob` slices
//!   read with `FileReaderSync` in the browser worker. Decoded tiles are kept in a small
//!   cache of bounded size ([`CACHE_BYTES`]), so memory does not grow with the file.
//! - Label and macro images (which carry patient identifiers) are listed by kind and size in
//!   [`Slide::associated`] and never decoded.
//! - [`tissue`] computes a tissue mask from a low-resolution level; [`tiling`] chooses the level
//!   for a target resolution and lists the patches.
//!
//! Native and browser share this module, so a slide is tiled identically by the worker and by
//! `weights-tool embed --slide`.

mod codec;
mod dicom;
pub mod tiff;
pub mod tiling;
pub mod tissue;

pub use codec::{Codec, JpegColour};
pub use tiling::{Patch, Tiling, TilingOptions};
pub use tissue::TissueMask;

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use crate::preprocess::Rgb8;
use crate::{Error, Result};

/// Reads through [`crate::Source`] (random access to a file's bytes), the trait model import
/// uses too: `DiskFile` natively, `Bytes` in memory, the worker's `FileReaderSync` slices.
pub use crate::checkpoint::{Bytes, Source};
#[cfg(not(target_family = "wasm"))]
pub use crate::checkpoint::DiskFile;

/// Read `buf.len()` bytes at `offset`, as a slide [`Problem`].
fn read_exact(src: &dyn Source, offset: u64, buf: &mut [u8]) -> Result<(), Problem> {
    src.read_at(offset, buf).map_err(|e| match e {
        Error::Weights { reason, .. } => Problem::Io(reason),
        e => Problem::Io(e.to_string()),
    })
}

/// Why a slide could not be opened or read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Not a slide format we recognise.
    Unknown,
    /// A slide format we recognise and do not read, by name, with what to do instead.
    Refused { format: &'static str, hint: &'static str },
    /// A variant of a supported format we cannot decode.
    Unsupported(String),
    /// The file ends before data it points to.
    Truncated(String),
    /// The bytes contradict themselves.
    Corrupt(String),
    /// Reading the file failed.
    Io(String),
    /// The slide does not say its resolution; the user must give it.
    NoResolution,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => write!(
                f,
                "not a slide format Obscura reads (Aperio SVS, tiled pyramidal TIFF, DICOM WSI)"
            ),
            Self::Refused { format, hint } => write!(f, "{format} is not supported: {hint}"),
            Self::Unsupported(why) => write!(f, "unsupported variant: {why}"),
            Self::Truncated(why) => write!(f, "truncated: {why}"),
            Self::Corrupt(why) => write!(f, "corrupt: {why}"),
            Self::Io(why) => write!(f, "could not be read: {why}"),
            Self::NoResolution => write!(
                f,
                "the file does not say its resolution (microns per pixel): enter it to tile the slide"
            ),
        }
    }
}

/// Slide formats built on TIFF that [`Slide::open`] refuses by name (a TIFF refused for another
/// reason may still be an ordinary image).
pub const TIFF_SLIDE_FORMATS: [&str; 3] = [tiff::NDPI, tiff::SCN, tiff::OME];

/// The container a slide came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svs,
    Tiff,
    Dicom,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Svs => "Aperio SVS",
            Self::Tiff => "pyramidal TIFF",
            Self::Dicom => "DICOM WSI",
        }
    }
}

/// Where a level's tiles are.
#[derive(Debug, Clone)]
pub enum Tiles {
    /// Offsets and byte counts in `sources[source]`, in row-major tile order. A count of 0 is a
    /// tile that was never written: it reads as blank (white).
    Table { source: usize, offsets: Vec<u64>, counts: Vec<u64> },
}

/// One resolution of the pyramid.
#[derive(Debug, Clone)]
pub struct Level {
    pub width: u32,
    pub height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    /// Level-0 pixels per pixel of this level.
    pub downsample: f64,
    pub codec: Codec,
    tiles: Tiles,
}

impl Level {
    pub fn tiles_across(&self) -> u32 {
        self.width.div_ceil(self.tile_width)
    }
    pub fn tiles_down(&self) -> u32 {
        self.height.div_ceil(self.tile_height)
    }
}

/// An image stored beside the pyramid (label, macro, thumbnail): listed, never decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Associated {
    pub kind: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The largest region read at once (64 Mpx, 192 MB of RGB).
pub const MAX_REGION_PIXELS: u64 = 1 << 26;

/// Decoded tiles kept for reuse by neighbouring regions: at most this many bytes.
pub const CACHE_BYTES: usize = 64 << 20;

/// (level, tile x, tile y).
type TileKey = (usize, u32, u32);

#[derive(Default)]
struct Cache {
    /// Decoded tiles and when each was last used.
    tiles: HashMap<TileKey, (Rc<Vec<u8>>, u64)>,
    bytes: usize,
    clock: u64,
}

/// An open slide: its levels and metadata; tiles are read on demand.
pub struct Slide {
    pub name: String,
    pub format: Format,
    /// Largest first; `levels[0]` is full resolution.
    pub levels: Vec<Level>,
    /// Microns per pixel at level 0, when the file says.
    pub mpp: Option<f64>,
    /// Objective magnification the slide was scanned at, when the file says.
    pub magnification: Option<f64>,
    pub associated: Vec<Associated>,
    sources: Vec<Rc<dyn Source>>,
    cache: std::cell::RefCell<Cache>,
    /// Bytes read from the sources so far (tests check laziness with it).
    read: std::cell::Cell<u64>,
}

impl fmt::Debug for Slide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slide")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("levels", &self.levels.iter().map(|l| (l.width, l.height)).collect::<Vec<_>>())
            .field("mpp", &self.mpp)
            .finish()
    }
}

fn slide_error(name: &str, problem: Problem) -> Error {
    Error::Slide { name: name.to_string(), problem }
}

/// Extension of a file name, lower case.
fn extension(name: &str) -> String {
    name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

/// Formats recognised by name or magic and refused before anything else is read.
fn refused_by_name(name: &str, head: &[u8]) -> Option<Problem> {
    let convert = "convert it to DICOM or pyramidal TIFF (e.g. with wsidicomizer or bfconvert)";
    let format = match extension(name).as_str() {
        "ndpi" => "Hamamatsu NDPI",
        "mrxs" => "3DHISTECH MRXS",
        "isyntax" => "Philips iSyntax",
        "czi" => "Zeiss CZI",
        "vsi" => "Olympus VSI",
        "scn" => "Leica SCN",
        "vms" | "vmu" => "Hamamatsu VMS/VMU",
        "bif" => "Ventana BIF",
        _ if head.starts_with(b"ZISRAWFILE") => "Zeiss CZI",
        _ => return None,
    };
    Some(Problem::Refused { format, hint: convert })
}

impl Slide {
    /// Open a slide file (SVS or pyramidal TIFF). `name` is the file name: it names the slide in
    /// messages and recognises formats refused by extension. A DICOM file given here is opened
    /// as a one-file DICOM series.
    pub fn open(name: &str, source: Rc<dyn Source>) -> Result<Self> {
        let err = |p| slide_error(name, p);
        let mut head = vec![0u8; source.len().min(132) as usize];
        read_exact(source.as_ref(), 0, &mut head).map_err(err)?;
        if let Some(p) = refused_by_name(name, &head) {
            return Err(err(p));
        }
        if source.is_empty() {
            return Err(err(Problem::Corrupt("empty file (0 bytes)".into())));
        }
        if dicom::is_dicom(&head) {
            return Self::open_dicom(name, vec![source]);
        }
        if !tiff::is_tiff(&head) {
            return Err(err(Problem::Unknown));
        }
        let opened = tiff::open(source.as_ref()).map_err(err)?;
        Ok(Self::assemble(name, opened.format, opened.levels, opened.mpp, opened.magnification, opened.associated, vec![source]))
    }

    /// Open a DICOM WSI series from its files (the instances of one series: one per level, plus
    /// label and overview instances, which are listed and never decoded).
    pub fn open_dicom(name: &str, files: Vec<Rc<dyn Source>>) -> Result<Self> {
        let opened = dicom::open(&files).map_err(|p| slide_error(name, p))?;
        let sources = files;
        Ok(Self::assemble(name, Format::Dicom, opened.levels, opened.mpp, None, opened.associated, sources))
    }

    fn assemble(
        name: &str,
        format: Format,
        mut levels: Vec<Level>,
        mpp: Option<f64>,
        magnification: Option<f64>,
        associated: Vec<Associated>,
        sources: Vec<Rc<dyn Source>>,
    ) -> Self {
        let (w0, h0) = (levels[0].width as f64, levels[0].height as f64);
        for l in &mut levels {
            l.downsample = ((w0 / l.width as f64) + (h0 / l.height as f64)) / 2.0;
        }
        Self {
            name: name.to_string(),
            format,
            levels,
            mpp,
            magnification,
            associated,
            sources,
            cache: Default::default(),
            read: Default::default(),
        }
    }

    pub fn width(&self) -> u32 {
        self.levels[0].width
    }
    pub fn height(&self) -> u32 {
        self.levels[0].height
    }

    /// Bytes read from the file(s) so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.get()
    }

    fn err(&self, p: Problem) -> Error {
        slide_error(&self.name, p)
    }

    /// Tile (`tx`, `ty`) of `level`, decoded to RGB at the level's full tile size (edge tiles
    /// keep their padding).
    pub fn tile(&self, level: usize, tx: u32, ty: u32) -> Result<Rc<Vec<u8>>> {
        let key = (level, tx, ty);
        {
            let mut c = self.cache.borrow_mut();
            c.clock += 1;
            let now = c.clock;
            if let Some(hit) = c.tiles.get_mut(&key) {
                hit.1 = now;
                return Ok(hit.0.clone());
            }
        }
        let l = self.levels.get(level).ok_or_else(|| self.err(Problem::Unsupported(format!("no level {level}"))))?;
        if tx >= l.tiles_across() || ty >= l.tiles_down() {
            return Err(self.err(Problem::Unsupported(format!("tile {tx},{ty} is outside level {level}"))));
        }
        let index = (ty as u64 * l.tiles_across() as u64 + tx as u64) as usize;
        let Tiles::Table { source, offsets, counts } = &l.tiles;
        let (Some(&offset), Some(&count)) = (offsets.get(index), counts.get(index)) else {
            return Err(self.err(Problem::Corrupt(format!("no entry for tile {tx},{ty} of level {level}"))));
        };
        let pixels = if count == 0 {
            vec![255; l.tile_width as usize * l.tile_height as usize * 3]
        } else {
            let src = &self.sources[*source];
            if offset.saturating_add(count) > src.len() || count > 256 << 20 {
                return Err(self.err(Problem::Truncated(format!("tile {tx},{ty} of level {level} lies past the end of the file"))));
            }
            let mut data = vec![0; count as usize];
            read_exact(src.as_ref(), offset, &mut data).map_err(|p| self.err(p))?;
            self.read.set(self.read.get() + count);
            l.codec.decode(&data, l.tile_width, l.tile_height).map_err(|p| {
                self.err(match p {
                    Problem::Corrupt(why) => Problem::Corrupt(format!("tile {tx},{ty} of level {level}: {why}")),
                    p => p,
                })
            })?
        };
        let pixels = Rc::new(pixels);
        let mut c = self.cache.borrow_mut();
        c.bytes += pixels.len();
        let now = c.clock;
        c.tiles.insert(key, (pixels.clone(), now));
        while c.bytes > CACHE_BYTES && c.tiles.len() > 1 {
            let oldest = *c.tiles.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k).unwrap();
            if let Some((p, _)) = c.tiles.remove(&oldest) {
                c.bytes -= p.len();
            }
        }
        Ok(pixels)
    }

    /// The pixels of `level` in the rectangle at (`x`, `y`) (level pixels) of `width` x
    /// `height`. What lies outside the level reads as white, like glass.
    pub fn region(&self, level: usize, x: i64, y: i64, width: u32, height: u32) -> Result<Rgb8> {
        if width as u64 * height as u64 > MAX_REGION_PIXELS {
            return Err(self.err(Problem::Unsupported(format!("a {width}x{height} region is too large to read at once"))));
        }
        let l = &self.levels[level];
        let (tw, th) = (l.tile_width as i64, l.tile_height as i64);
        let mut out = vec![255u8; width as usize * height as usize * 3];
        let x0 = x.max(0);
        let y0 = y.max(0);
        let x1 = (x + width as i64).min(l.width as i64);
        let y1 = (y + height as i64).min(l.height as i64);
        if x0 < x1 && y0 < y1 {
            for ty in (y0 / th)..=((y1 - 1) / th) {
                for tx in (x0 / tw)..=((x1 - 1) / tw) {
                    let tile = self.tile(level, tx as u32, ty as u32)?;
                    // The part of this tile inside the region.
                    let (sx0, sy0) = ((tx * tw).max(x0), (ty * th).max(y0));
                    let (sx1, sy1) = (((tx + 1) * tw).min(x1), ((ty + 1) * th).min(y1));
                    let row = (sx1 - sx0) as usize * 3;
                    for sy in sy0..sy1 {
                        let src = ((sy - ty * th) * tw + (sx0 - tx * tw)) as usize * 3;
                        let dst = ((sy - y) * width as i64 + (sx0 - x)) as usize * 3;
                        out[dst..dst + row].copy_from_slice(&tile[src..src + row]);
                    }
                }
            }
        }
        Ok(Rgb8 { width, height, data: out })
    }

    /// Identity of the slide's files without reading gigabytes: sha256 of each file's size and
    /// its first and last 64 KiB (a TIFF's directories, a DICOM's header and offset table).
    pub fn fingerprint(&self) -> Result<[u8; 32]> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for src in &self.sources {
            let len = src.len();
            h.update(len.to_le_bytes());
            let n = len.min(64 << 10);
            let mut buf = vec![0u8; n as usize];
            read_exact(src.as_ref(), 0, &mut buf).map_err(|p| self.err(p))?;
            h.update(&buf);
            read_exact(src.as_ref(), len - n, &mut buf).map_err(|p| self.err(p))?;
            h.update(&buf);
        }
        Ok(h.finalize().into())
    }

    /// Microns per pixel of `level`, when the slide's resolution is known.
    pub fn level_mpp(&self, level: usize) -> Option<f64> {
        self.mpp.map(|m| m * self.levels[level].downsample)
    }
}

/// A patch's identity in a collection: the slide's [`Slide::fingerprint`] and the patch's square.
/// The worker and `weights-tool` compute it alike, so a slide embedded natively and imported is
/// not embedded again when the slide is dropped in the tab.
pub fn patch_hash(fingerprint: &[u8; 32], patch: &Patch) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(fingerprint);
    for v in [patch.x, patch.y, patch.size] {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

/// Long side of the overview the tissue mask is computed on. At 1024 px a 100,000-px slide's
/// mask pixel is ~100 level-0 pixels, finer than any patch.
pub const OVERVIEW_SIDE: u32 = 1024;

/// The whole preparation of a slide for embedding, the same natively and in the worker: the
/// overview, its tissue mask, and the patches to embed.
pub fn prepare(slide: &Slide, options: &TilingOptions) -> Result<(Rgb8, TissueMask, Tiling)> {
    let (overview, downsample) = overview(slide, OVERVIEW_SIDE)?;
    let mask = TissueMask::from_overview(&overview, downsample);
    let tiling = Tiling::plan(slide, &mask, options)?;
    Ok((overview, mask, tiling))
}

/// A level of at most `max_side` on its long side, for overviews and the tissue mask: the
/// smallest level at least that large, area-averaged down to it (streamed tile by tile, so a
/// slide without a small level is still read in bounded memory).
pub fn overview(slide: &Slide, max_side: u32) -> Result<(Rgb8, f64)> {
    let level = (0..slide.levels.len())
        .rev()
        .find(|&i| slide.levels[i].width.max(slide.levels[i].height) >= max_side)
        .unwrap_or(0);
    let l = &slide.levels[level];
    let scale = (max_side as f64 / l.width.max(l.height) as f64).min(1.0);
    let (ow, oh) = (((l.width as f64 * scale).round() as u32).max(1), ((l.height as f64 * scale).round() as u32).max(1));
    // Box-average each output pixel over the level pixels it covers, a tile row at a time.
    let mut sum = vec![0u64; ow as usize * oh as usize * 3];
    let mut n = vec![0u32; ow as usize * oh as usize];
    let (fx, fy) = (ow as f64 / l.width as f64, oh as f64 / l.height as f64);
    for ty in 0..l.tiles_down() {
        for tx in 0..l.tiles_across() {
            // A damaged tile reads as glass here: it costs the mask that tile, not the slide
            // (its patches fail, and are reported, when they are read).
            let tile = match slide.tile(level, tx, ty) {
                Ok(t) => t,
                Err(_) => Rc::new(vec![255; l.tile_width as usize * l.tile_height as usize * 3]),
            };
            for py in 0..l.tile_height {
                let y = ty * l.tile_height + py;
                if y >= l.height {
                    break;
                }
                let oy = ((y as f64 * fy) as usize).min(oh as usize - 1);
                for px in 0..l.tile_width {
                    let x = tx * l.tile_width + px;
                    if x >= l.width {
                        break;
                    }
                    let ox = ((x as f64 * fx) as usize).min(ow as usize - 1);
                    let o = oy * ow as usize + ox;
                    let s = (py * l.tile_width + px) as usize * 3;
                    for c in 0..3 {
                        sum[o * 3 + c] += tile[s + c] as u64;
                    }
                    n[o] += 1;
                }
            }
        }
    }
    let data = sum.iter().enumerate().map(|(i, &s)| (s as f64 / n[i / 3].max(1) as f64).round() as u8).collect();
    let downsample = l.downsample * l.width as f64 / ow as f64;
    Ok((Rgb8 { width: ow, height: oh, data }, downsample))
}
