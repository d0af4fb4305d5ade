//! Converted model directories, as `weights-tool convert` writes them and the app downloads them:
//!
//! ```text
//! manifest.json                       what follows, with the model's config and preprocessing
//! model-00001-of-00003.safetensors    shards: valid safetensors files, a few tens of MB each
//! …
//! tokenizer.json
//! ```
//!
//! Each logical tensor (a Hugging Face `CLIPModel` name) is stored by one [`Scheme`]:
//! - `f32`, `f16`: as is, or rounded to f16;
//! - `q8`: int8, symmetric, one f32 scale per output channel (row): `w[r][c] ≈ q[r][c]·s[r]`;
//! - `q4`: 4-bit codes into [`Q4_LEVELS`] (NF4) in blocks of `block` values along a row, one f16
//!   scale per block, two codes per byte (low nibble first), rows padded to whole bytes.
//!
//! A quantized tensor is two safetensors entries: `<name>` (I8 or U8 codes) and `<name>.scale`.
//! Loading checks every shard's size and sha256 and every entry's dtype, shape and byte range
//! before anything is built, then dequantizes to f32: kernels run in f32, so a quantized model
//! saves download and storage, not GPU memory.

use std::collections::HashMap;

use half::f16;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::weights::{HostTensor, RawTensor, Weights, read_safetensors_raw};

/// The manifest version this build writes and the newest it reads.
pub const MANIFEST_VERSION: u32 = 1;
/// `format` field of a manifest.
pub const MANIFEST_FORMAT: &str = "obscura-clip-weights";

/// How a tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scheme {
    F32,
    F16,
    Q8,
    Q4 { block: usize },
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 { .. } => "q4",
        }
    }
}

/// Where one safetensors entry sits: its key in the shard and its absolute byte range in the
/// shard file (so a client could fetch it with a range request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub key: String,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub scheme: Scheme,
    /// Index into [`Manifest::shards`].
    pub shard: usize,
    pub data: Part,
    /// The scales of `q8` and `q4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    /// `"clip"`: the Hugging Face `CLIPModel` architecture and tensor names.
    pub architecture: String,
    /// Where the weights came from (a Hugging Face repo id or a directory name).
    pub source: String,
    /// The scheme of the large matrices: `f32`, `f16`, `q8` or `q4`.
    pub dtype: String,
    /// The checkpoint's `config.json`.
    pub config: serde_json::Value,
    /// The checkpoint's `preprocessor_config.json`, if it had one.
    #[serde(default)]
    pub preprocessor: Option<serde_json::Value>,
    /// The tokenizer file, next to the manifest.
    pub tokenizer: String,
    #[serde(default)]
    pub tokenizer_config: Option<serde_json::Value>,
    pub parameters: u64,
    /// What the app shows and uses when offering the model.
    #[serde(default)]
    pub card: ModelCard,
    pub tensors: Vec<TensorEntry>,
    pub shards: Vec<ShardEntry>,
}

/// A model's description for the app's model picker (`weights-tool catalog` collects them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelCard {
    /// Display name; empty means the manifest's `source`.
    pub name: String,
    /// e.g. `general`, `pathology`, `radiology`.
    pub domain: String,
    /// SPDX id or a short statement of the weights' licence.
    pub license: String,
    /// Zero-shot prompt templates, `{}` standing for the label.
    pub templates: Vec<String>,
}

impl Default for ModelCard {
    fn default() -> Self {
        Self {
            name: String::new(),
            domain: "general".into(),
            license: "unknown".into(),
            templates: vec!["a photo of {}.".into()],
        }
    }
}

impl Manifest {
    /// Parses and checks the version (a newer manifest is refused, naming both versions).
    pub fn from_json(json: &str) -> Result<Self> {
        let bad = |reason: String| Error::Weights { file: "manifest.json".into(), reason };
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            format_version: Option<u32>,
        }
        let head: Head = serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        if head.format.as_deref() != Some(MANIFEST_FORMAT) {
            return Err(bad(format!("`format` is {:?}, expected \"{MANIFEST_FORMAT}\"", head.format)));
        }
        match head.format_version {
            Some(v) if v > MANIFEST_VERSION => {
                return Err(bad(format!(
                    "format version {v} is newer than this build reads ({MANIFEST_VERSION}); update Obscura"
                )));
            }
            None | Some(0) => return Err(bad("missing or invalid `format_version`".into())),
            Some(_) => {}
        }
        let manifest: Self = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if manifest.architecture != "clip" {
            return Err(Error::UnsupportedArchitecture {
                file: "manifest.json".into(),
                found: manifest.architecture,
            });
        }
        Ok(manifest)
    }

    /// Bytes of all shards.
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks one shard's size and checksum against the manifest.
pub fn check_shard(entry: &ShardEntry, bytes: &[u8]) -> Result<()> {
    let bad = |reason: String| Error::Weights { file: entry.file.clone(), reason };
    if bytes.len() as u64 != entry.bytes {
        return Err(bad(format!(
            "{} bytes, the manifest says {} (truncated or a different file)",
            bytes.len(),
            entry.bytes
        )));
    }
    let sum = sha256_hex(bytes);
    if sum != entry.sha256 {
        return Err(bad(format!("sha256 {sum} does not match the manifest's {} (corrupted)", entry.sha256)));
    }
    Ok(())
}

impl Weights {
    /// Reads a converted model's shards (by file name), checking every shard's size and sha256
    /// and every tensor's storage before dequantizing anything.
    pub fn from_converted(manifest: &Manifest, shards: &HashMap<String, Vec<u8>>) -> Result<Self> {
        let mut parsed = Vec::with_capacity(manifest.shards.len());
        for entry in &manifest.shards {
            let bytes = shards.get(&entry.file).ok_or_else(|| Error::Weights {
                file: entry.file.clone(),
                reason: "shard listed in manifest.json is missing".into(),
            })?;
            check_shard(entry, bytes)?;
            parsed.push(read_safetensors_raw(bytes, &entry.file)?);
        }
        let mut plan = Vec::with_capacity(manifest.tensors.len());
        for t in &manifest.tensors {
            let file = manifest.shards.get(t.shard).map_or("manifest.json", |s| s.file.as_str());
            let bad = |reason: String| Error::Weights { file: file.to_string(), reason: format!("tensor `{}`: {reason}", t.name) };
            let shard = parsed.get(t.shard).ok_or_else(|| bad(format!("shard {} does not exist", t.shard)))?;
            let part = |p: &Part| -> Result<&RawTensor<'_>> {
                let raw = shard.get(&p.key).ok_or_else(|| bad(format!("entry `{}` is not in the shard", p.key)))?;
                if (raw.start as u64, raw.end as u64) != (p.start, p.end) {
                    return Err(bad(format!("entry `{}` is not at bytes {}..{}", p.key, p.start, p.end)));
                }
                Ok(raw)
            };
            let data = part(&t.data)?;
            let scale = t.scale.as_ref().map(part).transpose()?;
            check_storage(t, data, scale).map_err(bad)?;
            plan.push((t, data, scale));
        }
        // Everything checked: now dequantize.
        let tensors = plan
            .into_iter()
            .map(|(t, data, scale)| (t.name.clone(), dequantize(t, data, scale)))
            .collect();
        Ok(Weights::from_map(tensors))
    }
}

/// Rows and columns of a tensor seen as a matrix (first axis by the rest; a vector is one row).
pub fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n),
        [rows, rest @ ..] => (*rows, rest.iter().product()),
    }
}

/// Bytes per row of q4 codes and scales per row.
fn q4_layout(cols: usize, block: usize) -> (usize, usize) {
    (cols.div_ceil(2), cols.div_ceil(block))
}

fn check_storage(t: &TensorEntry, data: &RawTensor<'_>, scale: Option<&RawTensor<'_>>) -> std::result::Result<(), String> {
    let (rows, cols) = matrix_dims(&t.shape);
    let expect = |raw: &RawTensor<'_>, dtype: &str, shape: Vec<usize>| {
        if raw.dtype != dtype || raw.shape != shape {
            return Err(format!("stored as {} {:?}, expected {dtype} {shape:?}", raw.dtype, raw.shape));
        }
        Ok(())
    };
    match (t.scheme, scale) {
        (Scheme::F32, None) => expect(data, "F32", t.shape.clone()),
        (Scheme::F16, None) => expect(data, "F16", t.shape.clone()),
        (Scheme::Q8, Some(scale)) => {
            expect(data, "I8", vec![rows, cols])?;
            expect(scale, "F32", vec![rows])
        }
        (Scheme::Q4 { block }, Some(scale)) if block > 0 && block % 2 == 0 => {
            let (bytes, blocks) = q4_layout(cols, block);
            expect(data, "U8", vec![rows, bytes])?;
            expect(scale, "F16", vec![rows, blocks])
        }
        (scheme, _) => Err(format!("scheme {scheme:?} with the wrong parts")),
    }
}

fn dequantize(t: &TensorEntry, data: &RawTensor<'_>, scale: Option<&RawTensor<'_>>) -> HostTensor {
    let (_, cols) = matrix_dims(&t.shape);
    let bytes = data.bytes;
    let values = match t.scheme {
        Scheme::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Scheme::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Scheme::Q8 => {
            let scales = f32s(scale.expect("checked").bytes);
            dequantize_q8(bytes, &scales, cols)
        }
        Scheme::Q4 { block } => {
            let scales: Vec<f16> =
                scale.expect("checked").bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect();
            dequantize_q4(bytes, &scales, cols, block)
        }
    };
    HostTensor { shape: t.shape.clone(), data: values }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Symmetric int8 with one scale per row: `scale = max|row| / 127`.
pub fn quantize_q8(data: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(data.len() / cols.max(1));
    for row in data.chunks(cols) {
        let max = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(scale);
        codes.extend(row.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8));
    }
    (codes, scales)
}

pub fn dequantize_q8(codes: &[u8], scales: &[f32], cols: usize) -> Vec<f32> {
    codes
        .chunks(cols)
        .zip(scales)
        .flat_map(|(row, s)| row.iter().map(move |&q| q as i8 as f32 * s))
        .collect()
}

/// 4-bit codes in blocks of `block` along each row: `w ≈ Q4_LEVELS[code] · scale[block]` (scale
/// chosen by [`q4_block`]), two codes per byte (low nibble first); rows padded to whole bytes.
pub fn quantize_q4(data: &[f32], cols: usize, block: usize) -> (Vec<u8>, Vec<f16>) {
    let (row_bytes, row_blocks) = q4_layout(cols, block);
    let rows = data.len() / cols.max(1);
    let mut codes = Vec::with_capacity(rows * row_bytes);
    let mut scales = Vec::with_capacity(rows * row_blocks);
    for row in data.chunks(cols) {
        let mut row_codes = Vec::with_capacity(cols + 1);
        for chunk in row.chunks(block) {
            let (scale, codes) = q4_block(chunk);
            scales.push(scale);
            row_codes.extend(codes);
        }
        row_codes.resize(row_bytes * 2, nearest_level(0.0));
        codes.extend(row_codes.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
    }
    (codes, scales)
}

/// The 16 levels of a q4 code: NF4 (QLoRA, Dettmers et al. 2023), the quantiles of a normal
/// distribution scaled to [-1, 1], with an exact zero. Trained and initialised weights are close
/// to normal within a block, so these levels lose less than a uniform grid (measured: see
/// BENCHMARKS.md).
pub const Q4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

fn nearest_level(x: f32) -> u8 {
    let i = Q4_LEVELS.partition_point(|&l| l < x);
    match i {
        0 => 0,
        16 => 15,
        i if x - Q4_LEVELS[i - 1] <= Q4_LEVELS[i] - x => (i - 1) as u8,
        i => i as u8,
    }
}

/// One q4 block: the f16 scale and level indices that minimise the squared error. Tries scales
/// around `max|w|`, and for each the least-squares scale for its codes (as llama.cpp's
/// `make_qx_quants` does); then rounds the scale to f16 and re-derives the codes.
fn q4_block(w: &[f32]) -> (f16, Vec<u8>) {
    let max = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (f16::ONE, vec![nearest_level(0.0); w.len()]);
    }
    let codes_for = |s: f32| -> Vec<u8> { w.iter().map(|x| nearest_level(x / s)).collect() };
    let mut best = (f32::INFINITY, max);
    for step in 0..=16 {
        let q = codes_for(max * (0.7 + 0.025 * step as f32));
        let (num, den) = w
            .iter()
            .zip(&q)
            .fold((0.0, 0.0), |(n, d), (x, &q)| (n + x * Q4_LEVELS[q as usize], d + Q4_LEVELS[q as usize].powi(2)));
        if den > 0.0 {
            let s = num / den;
            let e: f32 = w.iter().zip(&q).map(|(x, &q)| (x - s * Q4_LEVELS[q as usize]).powi(2)).sum();
            if e < best.0 {
                best = (e, s);
            }
        }
    }
    let scale = f16::from_f32(best.1);
    let s = scale.to_f32();
    (scale, codes_for(if s > 0.0 { s } else { f32::MIN_POSITIVE }))
}

pub fn dequantize_q4(codes: &[u8], scales: &[f16], cols: usize, block: usize) -> Vec<f32> {
    let (row_bytes, row_blocks) = q4_layout(cols, block);
    let mut out = Vec::with_capacity(codes.len() / row_bytes.max(1) * cols);
    for (row, row_scales) in codes.chunks(row_bytes).zip(scales.chunks(row_blocks)) {
        for c in 0..cols {
            let byte = row[c / 2];
            let q = if c % 2 == 0 { byte & 0x0f } else { byte >> 4 };
            out.push(Q4_LEVELS[q as usize] * row_scales[c / block].to_f32());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_and_q4_round_trip_within_half_a_step() {
        let cols = 37;
        let data: Vec<f32> = (0..cols * 3).map(|i| ((i * 7919 % 201) as f32 - 100.0) / 50.0).collect();
        let (codes, scales) = quantize_q8(&data, cols);
        let bytes: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
        let back = dequantize_q8(&bytes, &scales, cols);
        for (i, (a, b)) in data.iter().zip(&back).enumerate() {
            assert!((a - b).abs() <= scales[i / cols] / 2.0 + 1e-6, "{a} {b}");
        }
        for block in [8, 32] {
            let (codes, scales) = quantize_q4(&data, cols, block);
            let (row_bytes, row_blocks) = q4_layout(cols, block);
            assert_eq!((codes.len(), scales.len()), (3 * row_bytes, 3 * row_blocks));
            let back = dequantize_q4(&codes, &scales, cols, block);
            for (i, (a, b)) in data.iter().zip(&back).enumerate() {
                // The widest gap between NF4 levels is 0.304 of the scale.
                let s = scales[(i / cols) * row_blocks + (i % cols) / block].to_f32();
                assert!((a - b).abs() <= 0.16 * s + 1e-6, "block {block}: {a} {b}");
            }
        }
    }

    #[test]
    fn newer_or_foreign_manifests_are_refused() {
        let err = Manifest::from_json(r#"{"format":"obscura-clip-weights","format_version":9}"#).unwrap_err();
        assert!(err.to_string().contains("format version 9 is newer than this build reads (1)"), "{err}");
        let err = Manifest::from_json(r#"{"format":"gguf","format_version":1}"#).unwrap_err();
        assert!(err.to_string().contains("expected \"obscura-clip-weights\""), "{err}");
        assert!(Manifest::from_json("{").is_err());
    }
}
