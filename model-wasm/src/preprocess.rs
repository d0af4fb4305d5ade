//! Image decoding and preprocessing equal to transformers' `CLIPImageProcessorPil`.
//!
//! Every step mirrors what Python does with Pillow, because users compare our embeddings with
//! theirs and small pixel differences are exactly what makes in-browser CLIP ports drift:
//!
//! 1. decode (PNG, JPEG, WebP, GIF first frame, BMP, TIFF), refusing images over
//!    [`MAX_PIXELS`] from the header, before any pixel is decoded;
//! 2. optionally apply the EXIF orientation (`transformers.image_utils.load_image` calls
//!    `PIL.ImageOps.exif_transpose`);
//! 3. convert to 8-bit RGB the way Pillow's `convert` does (16-bit grey is *clipped* to 255,
//!    16-bit colour keeps the high byte) and composite alpha onto white with Pillow's integer
//!    `alpha_composite` (transformers 5.x `convert_to_rgb`);
//! 4. resize the shortest edge with Pillow's two-pass fixed-point resampler
//!    (`libImaging/Resample.c`), the long edge floored as in `get_resize_output_image_size`;
//! 5. centre crop at `((h - S) // 2, (w - S) // 2)`, zero padding where the image is smaller;
//! 6. `x / 255` then `(x - mean) / std`, in f32 as numpy does.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader};
use serde::Deserialize;

use crate::error::{Error, ImageProblem, Result};

/// Images above 50 megapixels are refused from their header (decompression bombs).
pub const MAX_PIXELS: u64 = 50_000_000;

/// Whether to apply the EXIF orientation tag before preprocessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exif {
    /// Rotate/flip as the camera says (what a person expects to see). transformers'
    /// `load_image` does the same.
    #[default]
    Apply,
    /// Use the stored pixel grid as is (what `Image.open` without `exif_transpose` gives).
    Ignore,
}

/// Resampling filter (`resample` in the preprocessor config, PIL's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Bilinear,
    Bicubic,
}

/// How the image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// Shortest edge to this size, aspect ratio kept (long edge floored).
    ShortestEdge(u32),
    /// Exactly this size.
    Exact { height: u32, width: u32 },
}

/// `preprocessor_config.json` of a CLIP model, old (`"size": 224`, `"crop_size": 224`) and new
/// (`{"shortest_edge": 224}`, `{"height": 224, "width": 224}`) layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub resize: Option<ResizeTo>,
    pub resample: Resample,
    /// `(height, width)`.
    pub crop: Option<(u32, u32)>,
    pub rescale: Option<f64>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub normalize: bool,
}

const OPENAI_CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const OPENAI_CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

impl PreprocessConfig {
    /// The OpenAI CLIP defaults at a given image size.
    pub fn clip(size: u32) -> Self {
        Self {
            resize: Some(ResizeTo::ShortestEdge(size)),
            resample: Resample::Bicubic,
            crop: Some((size, size)),
            rescale: Some(1.0 / 255.0),
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
            normalize: true,
        }
    }

    /// Parse `preprocessor_config.json`. Missing fields take `CLIPImageProcessor`'s defaults.
    pub fn from_json(json: &str, file: &str) -> Result<Self> {
        let bad = |reason: String| Error::Config { file: file.to_string(), reason };
        let raw: RawPreprocess = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let size = |v: &serde_json::Value, what: &str| -> Result<ResizeTo> {
            if let Some(n) = v.as_u64() {
                return Ok(ResizeTo::ShortestEdge(n as u32));
            }
            let get = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as u32);
            match (get("shortest_edge"), get("height"), get("width")) {
                (Some(s), _, _) => Ok(ResizeTo::ShortestEdge(s)),
                (None, Some(height), Some(width)) => Ok(ResizeTo::Exact { height, width }),
                _ => Err(bad(format!("`{what}` must be a number, {{\"shortest_edge\"}} or {{\"height\", \"width\"}}, got {v}"))),
            }
        };
        let resize = match (&raw.size, raw.do_resize.unwrap_or(true)) {
            (_, false) => None,
            (None, true) => Some(ResizeTo::ShortestEdge(224)),
            (Some(v), true) => Some(size(v, "size")?),
        };
        let crop = match (&raw.crop_size, raw.do_center_crop.unwrap_or(true)) {
            (_, false) => None,
            (None, true) => Some((224, 224)),
            (Some(v), true) => Some(match size(v, "crop_size")? {
                ResizeTo::ShortestEdge(s) => (s, s),
                ResizeTo::Exact { height, width } => (height, width),
            }),
        };
        let resample = match raw.resample.unwrap_or(3) {
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            other => return Err(bad(format!("resample {other} is not supported (2 bilinear, 3 bicubic)"))),
        };
        let triple = |v: Option<Vec<f32>>, default: [f32; 3], what: &str| -> Result<[f32; 3]> {
            match v {
                None => Ok(default),
                Some(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
                Some(v) => Err(bad(format!("`{what}` needs 3 values, got {}", v.len()))),
            }
        };
        let std = triple(raw.image_std, OPENAI_CLIP_STD, "image_std")?;
        if std.contains(&0.0) {
            return Err(bad("`image_std` contains 0".into()));
        }
        Ok(Self {
            resize,
            resample,
            crop,
            rescale: raw.do_rescale.unwrap_or(true).then(|| raw.rescale_factor.unwrap_or(1.0 / 255.0)),
            mean: triple(raw.image_mean, OPENAI_CLIP_MEAN, "image_mean")?,
            std,
            normalize: raw.do_normalize.unwrap_or(true),
        })
    }

    /// Side of the square the model expects, when the config produces one.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        self.crop.or(match self.resize {
            Some(ResizeTo::Exact { height, width }) => Some((height, width)),
            _ => None,
        })
    }
}

#[derive(Deserialize)]
struct RawPreprocess {
    do_resize: Option<bool>,
    size: Option<serde_json::Value>,
    resample: Option<u32>,
    do_center_crop: Option<bool>,
    crop_size: Option<serde_json::Value>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
}

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Preprocessed pixels, `[3, height, width]` in channel-first order.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub height: u32,
    pub width: u32,
    pub data: Vec<f32>,
}

/// Decode an image file's bytes into 8-bit RGB with Pillow's conversions.
/// `name` is only used in error messages.
pub fn decode(bytes: &[u8], name: &str, exif: Exif) -> Result<Rgb8> {
    let refuse = |reason: ImageProblem| Error::UnsupportedImage { name: name.to_string(), reason };
    if bytes.is_empty() {
        return Err(refuse(ImageProblem::Empty));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| refuse(ImageProblem::Corrupt(e.to_string())))?;
    if reader.format().is_none() {
        return Err(refuse(ImageProblem::UnknownFormat));
    }
    // The JPEG decoder fills a cut-off scan with grey and succeeds; Pillow refuses such a file
    // ("image file is truncated"), and so do we: half an image would be searched as a whole one.
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(refuse(ImageProblem::Corrupt("the JPEG data ends before its end-of-image marker".into())));
    }
    let mut decoder = reader.into_decoder().map_err(|e| refuse(classify(e)))?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(refuse(ImageProblem::TooLarge { width, height, max_pixels: MAX_PIXELS }));
    }
    if width == 0 || height == 0 {
        return Err(refuse(ImageProblem::Corrupt(format!("{width}x{height} image has no pixels"))));
    }
    let orientation = match exif {
        // A broken EXIF block should not cost the user the image: fall back to no rotation.
        Exif::Apply => decoder.orientation().ok(),
        Exif::Ignore => None,
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| refuse(classify(e)))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    to_rgb8(img).map_err(|why| refuse(ImageProblem::Unsupported(why)))
}

/// Whether the last start-of-scan marker (`FF DA`) is followed by an end-of-image marker
/// (`FF D9`). Trailing bytes after the EOI (some cameras append data) are fine.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

fn classify(e: image::ImageError) -> ImageProblem {
    use image::ImageError as E;
    match e {
        E::Unsupported(u) => match u.kind() {
            image::error::UnsupportedErrorKind::Format(image::error::ImageFormatHint::Unknown) => {
                ImageProblem::UnknownFormat
            }
            _ => ImageProblem::Unsupported(u.to_string()),
        },
        E::Limits(l) => ImageProblem::Unsupported(format!("exceeds decoder limits: {l}")),
        other => ImageProblem::Corrupt(other.to_string()),
    }
}

/// Pillow's `convert("RGB")`, with alpha composited on white as transformers 5.x does.
fn to_rgb8(img: DynamicImage) -> std::result::Result<Rgb8, String> {
    let (width, height) = (img.width(), img.height());
    let n = width as usize * height as usize;
    let mut data = Vec::with_capacity(n * 3);
    match img {
        DynamicImage::ImageRgb8(b) => data = b.into_raw(),
        DynamicImage::ImageLuma8(b) => b.into_raw().iter().for_each(|&l| data.extend([l, l, l])),
        // Pillow opens 16-bit greyscale as mode I;16 and clips it to 255 when converting to L/RGB.
        DynamicImage::ImageLuma16(b) => b.into_raw().iter().for_each(|&l| {
            let l = l.min(255) as u8;
            data.extend([l, l, l])
        }),
        // 16-bit colour (and grey+alpha) PNGs are unpacked by Pillow keeping the high byte.
        DynamicImage::ImageRgb16(b) => data.extend(b.into_raw().iter().map(|&v| (v >> 8) as u8)),
        DynamicImage::ImageLumaA8(b) => {
            b.into_raw().chunks_exact(2).for_each(|p| composite(&mut data, [p[0], p[0], p[0], p[1]]))
        }
        DynamicImage::ImageLumaA16(b) => b.into_raw().chunks_exact(2).for_each(|p| {
            let (l, a) = ((p[0] >> 8) as u8, (p[1] >> 8) as u8);
            composite(&mut data, [l, l, l, a])
        }),
        DynamicImage::ImageRgba8(b) => {
            b.into_raw().chunks_exact(4).for_each(|p| composite(&mut data, [p[0], p[1], p[2], p[3]]))
        }
        DynamicImage::ImageRgba16(b) => b.into_raw().chunks_exact(4).for_each(|p| {
            composite(&mut data, [p[0], p[1], p[2], p[3]].map(|v| (v >> 8) as u8))
        }),
        other => return Err(format!("pixel format {:?} (floating point images are not supported)", other.color())),
    }
    debug_assert_eq!(data.len(), n * 3);
    Ok(Rgb8 { width, height, data })
}

/// Pillow's `Image.alpha_composite(white, src)` followed by `convert("RGB")`
/// (`libImaging/AlphaComposite.c`, integer arithmetic with 7 extra bits).
#[inline]
fn composite(out: &mut Vec<u8>, [r, g, b, a]: [u8; 4]) {
    const PRECISION_BITS: u32 = 7;
    if a == 0 {
        out.extend([255, 255, 255]);
        return;
    }
    let a = a as u32;
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let shift_div255 = |v: u32| ((v >> 8) + v) >> 8;
    let mix = |c: u8| {
        let tmp = c as u32 * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
        (shift_div255(tmp) >> PRECISION_BITS) as u8
    };
    out.extend([mix(r), mix(g), mix(b)]);
}

/// Output size of `get_resize_output_image_size(default_to_square=False)` for a shortest edge:
/// the short side becomes `short`, the long side `int(short * long / short_in)` (floored).
pub fn shortest_edge_size(width: u32, height: u32, short: u32) -> (u32, u32) {
    let (s, l) = if width <= height { (width, height) } else { (height, width) };
    let new_long = ((short as u64 * l as u64) as f64 / s as f64) as u32;
    if width <= height { (short, new_long) } else { (new_long, short) }
}

// ---- Pillow's resampler (libImaging/Resample.c), 8 bits per channel -------------------------

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Fixed-point coefficients for one axis: per output index, the first input index, the count,
/// and `ksize` weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute_coeffs(in_size: u32, out_size: u32, filter: Resample) -> Coeffs {
    let (kernel, support): (fn(f64) -> f64, f64) = match filter {
        Resample::Bicubic => (bicubic, 2.0),
        Resample::Bilinear => (bilinear, 1.0),
    };
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut weights = vec![0i32; out_size as usize * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `(int)` in C truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = kernel((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(xmax) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            // normalize_coeffs_8bpc: round half away from zero.
            let f = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { ksize, bounds, weights }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow `Image.resize((width, height), resample)` on an RGB image.
///
/// Pillow ≥ 12 runs the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width (`ImagingResampleInner`); the order changes the uint8 rounding in between,
/// so it is followed here.
pub fn resize(img: &Rgb8, width: u32, height: u32, filter: Resample) -> Rgb8 {
    let need_h = width != img.width;
    let need_v = height != img.height;
    if !need_h && !need_v {
        return img.clone();
    }
    let dy = img.height as i64 - height as i64;
    let dx = img.width as i64 - width as i64;
    let horizontal_first = !(dy > 0 && dy > dx * 2);
    let horiz = need_h.then(|| precompute_coeffs(img.width, width, filter));
    let vert = need_v.then(|| precompute_coeffs(img.height, height, filter));
    match (horizontal_first, horiz, vert) {
        (true, Some(h), Some(v)) => {
            // Only the source rows the vertical pass reads.
            let first = v.bounds[0].0;
            let (b, n) = v.bounds[height as usize - 1];
            let tmp = resample_horizontal(img, width, &h, first, b + n - first);
            resample_vertical(&tmp, height, &v, first)
        }
        (false, Some(h), Some(v)) => resample_horizontal(&resample_vertical(img, height, &v, 0), width, &h, 0, height as usize),
        (_, Some(h), None) => resample_horizontal(img, width, &h, 0, img.height as usize),
        (_, None, Some(v)) => resample_vertical(img, height, &v, 0),
        (_, None, None) => img.clone(),
    }
}

/// `ImagingResampleHorizontal_8bpc` over `rows` source rows starting at `first_row`.
fn resample_horizontal(img: &Rgb8, width: u32, c: &Coeffs, first_row: usize, rows: usize) -> Rgb8 {
    let in_row = img.width as usize * 3;
    let out_row = width as usize * 3;
    let mut out = vec![0u8; rows * out_row];
    for y in 0..rows {
        let src = &img.data[(y + first_row) * in_row..][..in_row];
        let dst = &mut out[y * out_row..][..out_row];
        for (xx, px) in dst.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = c.bounds[xx];
            let k = &c.weights[xx * c.ksize..][..n];
            let mut s = [1i32 << (PRECISION_BITS - 1); 3];
            for (i, &w) in k.iter().enumerate() {
                let p = &src[(xmin + i) * 3..][..3];
                s[0] += p[0] as i32 * w;
                s[1] += p[1] as i32 * w;
                s[2] += p[2] as i32 * w;
            }
            px.copy_from_slice(&s.map(clip8));
        }
    }
    Rgb8 { width, height: rows as u32, data: out }
}

/// `ImagingResampleVertical_8bpc`; `row_offset` is the first source row present in `img`.
fn resample_vertical(img: &Rgb8, height: u32, c: &Coeffs, row_offset: usize) -> Rgb8 {
    let row = img.width as usize * 3;
    let mut out = vec![0u8; height as usize * row];
    for yy in 0..height as usize {
        let (ymin, n) = c.bounds[yy];
        let ymin = ymin - row_offset;
        let k = &c.weights[yy * c.ksize..][..n];
        let dst = &mut out[yy * row..][..row];
        for (x, d) in dst.iter_mut().enumerate() {
            let mut s = 1i32 << (PRECISION_BITS - 1);
            for (i, &w) in k.iter().enumerate() {
                s += img.data[(ymin + i) * row + x] as i32 * w;
            }
            *d = clip8(s);
        }
    }
    Rgb8 { width: img.width, height, data: out }
}

/// Resize, crop, rescale and normalise a decoded image: the whole `CLIPImageProcessor`.
pub fn preprocess(img: &Rgb8, config: &PreprocessConfig) -> Pixels {
    let resized;
    let img = match config.resize {
        None => img,
        Some(to) => {
            let (w, h) = match to {
                ResizeTo::ShortestEdge(s) => shortest_edge_size(img.width, img.height, s),
                ResizeTo::Exact { height, width } => (width, height),
            };
            resized = resize(img, w, h, config.resample);
            &resized
        }
    };
    let (out_h, out_w) = config.crop.unwrap_or((img.height, img.width));
    // Python's floor division: negative offsets mean zero padding (transformers center_crop).
    let top = (img.height as i64 - out_h as i64).div_euclid(2);
    let left = (img.width as i64 - out_w as i64).div_euclid(2);
    let plane = out_h as usize * out_w as usize;
    let mut data = vec![0f32; 3 * plane];
    for y in 0..out_h as usize {
        let sy = y as i64 + top;
        for x in 0..out_w as usize {
            let sx = x as i64 + left;
            let inside = (0..img.height as i64).contains(&sy) && (0..img.width as i64).contains(&sx);
            for c in 0..3 {
                let v = if inside { img.data[(sy as usize * img.width as usize + sx as usize) * 3 + c] } else { 0 };
                // numpy: uint8 -> float64 * scale -> float32; then float32 (x - mean) / std.
                let mut x32 = match config.rescale {
                    Some(s) => (v as f64 * s) as f32,
                    None => v as f32,
                };
                if config.normalize {
                    x32 = (x32 - config.mean[c]) / config.std[c];
                }
                data[c * plane + y * out_w as usize + x] = x32;
            }
        }
    }
    Pixels { height: out_h, width: out_w, data }
}

/// Decode and preprocess in one call.
pub fn load_pixels(bytes: &[u8], name: &str, exif: Exif, config: &PreprocessConfig) -> Result<Pixels> {
    Ok(preprocess(&decode(bytes, name, exif)?, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_jpeg_scans_are_refused() {
        let mut jpeg = Vec::new();
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img).unwrap();
        assert!(decode(&jpeg, "whole.jpg", Exif::Apply).is_ok());
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"camera trailer");
        assert!(decode(&trailing, "trailer.jpg", Exif::Apply).is_ok(), "bytes after the EOI are fine");
        for cut in [jpeg.len() - 2, jpeg.len() * 2 / 3, 700] {
            let err = decode(&jpeg[..cut], "cut.jpg", Exif::Apply).unwrap_err().to_string();
            assert!(err.contains("cut.jpg") && err.contains("end-of-image"), "{err}");
        }
    }

    #[test]
    fn long_edge_is_floored() {
        assert_eq!(shortest_edge_size(1000, 60, 64), (1066, 64));
        assert_eq!(shortest_edge_size(60, 1000, 64), (64, 1066));
        assert_eq!(shortest_edge_size(7, 5, 224), (313, 224));
    }

    #[test]
    fn composite_matches_pillow_corner_cases() {
        let mut out = Vec::new();
        composite(&mut out, [0, 0, 0, 0]);
        composite(&mut out, [10, 20, 30, 255]);
        // Pillow: alpha_composite(white, (0, 0, 0, 128)) -> 127.
        composite(&mut out, [0, 0, 0, 128]);
        assert_eq!(out, [255, 255, 255, 10, 20, 30, 127, 127, 127]);
    }

    #[test]
    fn resize_of_constant_image_is_constant() {
        let img = Rgb8 { width: 37, height: 11, data: vec![200; 37 * 11 * 3] };
        let out = resize(&img, 9, 5, Resample::Bicubic);
        assert!(out.data.iter().all(|&v| v == 200));
        let out = resize(&img, 80, 30, Resample::Bicubic);
        assert!(out.data.iter().all(|&v| v == 200));
    }

    #[test]
    fn bad_bytes_are_named_errors() {
        let err = decode(&[], "a.png", Exif::Apply).unwrap_err().to_string();
        assert_eq!(err, "image a.png: empty file (0 bytes)");
        let err = decode(b"hello world, not an image", "b.txt", Exif::Apply).unwrap_err().to_string();
        assert!(err.contains("not a supported image"), "{err}");
        // A PNG signature followed by garbage.
        let err = decode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRxx", "c.png", Exif::Apply).unwrap_err().to_string();
        assert!(err.starts_with("image c.png: "), "{err}");
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        // A valid PNG header claiming 10000 x 10000 pixels with no image data behind it.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(10_000u32.to_be_bytes());
        ihdr.extend(10_000u32.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        png.extend(13u32.to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc32(&ihdr).to_be_bytes());
        // The start of an IDAT chunk: a real bomb's data would follow, and is never read.
        png.extend(1_000_000u32.to_be_bytes());
        png.extend(b"IDAT\x78\x9c");
        let err = decode(&png, "bomb.png", Exif::Apply).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedImage { reason: ImageProblem::TooLarge { width: 10_000, .. }, .. }),
            "{err}"
        );
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn both_config_layouts_parse() {
        let old = r#"{"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}"#;
        let new = r#"{"crop_size": {"height": 224, "width": 224}, "do_center_crop": true, "do_convert_rgb": true,
            "do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224}}"#;
        let a = PreprocessConfig::from_json(old, "old").unwrap();
        let b = PreprocessConfig::from_json(new, "new").unwrap();
        assert_eq!(a.resize, b.resize);
        assert_eq!(a.crop, Some((224, 224)));
        assert_eq!(a.crop, b.crop);
        assert_eq!(a.mean, b.mean);
        assert!(PreprocessConfig::from_json(r#"{"resample": 1}"#, "x").is_err());
    }
}
