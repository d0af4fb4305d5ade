//! The converter: a [`Checkpoint`] (Hugging Face or OpenCLIP, read lazily) to Obscura's
//! converted form (see [`crate::converted`]): every tensor stored as f32, f16, q8 or q4, grouped
//! into checksummed safetensors shards, with a manifest. `weights-tool convert` and the app's
//! worker both run this code; [`Converter::step`] encodes one tensor at a time so the worker can
//! report progress and take a Cancel between tensors.
//!
//! [`fidelity`] measures what the conversion cost: the converted model's embeddings of a few
//! bundled images and prompts against the unconverted model's.

use std::collections::HashMap;

use crate::checkpoint::{Checkpoint, TensorInfo};
use crate::converted::{
    MANIFEST_FORMAT, MANIFEST_VERSION, Part, ShardEntry, TensorEntry, dequantize_q4, dequantize_q8, matrix_dims, quantize_q4,
    quantize_q8, sha256_hex,
};
use crate::error::{Error, Result};
use crate::weights::{HostTensor, write_safetensors_raw};
use crate::{BackendChoice, Clip, ClipConfig, Exif, Manifest, ModelCard, Scheme};

/// q4 block length: 32 values share one f16 scale (4.5 bits per weight).
pub const Q4_BLOCK: usize = 32;

/// The storage type of a converted model's large matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
    Q8,
    Q4,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::F32, Self::F16, Self::Q8, Self::Q4].into_iter().find(|d| d.name() == s)
    }

    /// The least cosine to the unconverted model's embeddings a conversion must keep (on the
    /// bundled fidelity set) before the app uses it without the user insisting. q8 and q4 are
    /// the measured bounds of BENCHMARKS.md; f32 only reorders storage and f16 rounds.
    pub fn min_cosine(self) -> f64 {
        match self {
            Self::F32 => 0.99999,
            Self::F16 => 0.999,
            Self::Q8 => 0.995,
            Self::Q4 => 0.98,
        }
    }
}

/// Text-tower tensors that a `q4` model keeps in q8: every layer's attention value and output
/// projections, the whole first layer, and the text projection (3.5 MB more for ViT-B/32, as
/// llama.cpp's Q4_K_M keeps `attn_v` in more bits). Chosen by measurement on ViT-B/32 with random
/// weights (bench/q4_sensitivity.py: min / mean text cosine to fp32): all q4 at blocks of 16
/// 0.974 / 0.980; q8 `v_proj` 0.980 / 0.985, `out_proj` 0.981 / 0.985, layer 0 0.981 / 0.986,
/// `text_projection` 0.978 / 0.982; `q_proj`, `k_proj`, the token embedding, later layers
/// ≤ 0.001 each. The vision tower tolerates q4 better (0.993 min at blocks of 16, 0.991 at 32),
/// so blocks of 32 there pay for the q8 tensors and the model stays under 16% of fp32.
pub fn q4_keeps_q8(name: &str) -> bool {
    name == "text_projection.weight"
        || name.starts_with("text_model.encoder.layers.0.")
        || (name.starts_with("text_model.")
            && (name.ends_with(".self_attn.v_proj.weight") || name.ends_with(".self_attn.out_proj.weight")))
}

/// Which scheme a checkpoint tensor gets at a requested dtype. Linear and convolution weights and
/// the token embedding (a lookup table, one row per token: per-row scales suit it) are
/// quantized; layer norms, biases, class and position embeddings and `logit_scale` stay f32
/// (f16 for the 2-D ones when anything is reduced). At q4 a few text-tower matrices stay q8
/// ([`q4_keeps_q8`]). See BENCHMARKS.md for the measurements.
pub fn scheme_for(name: &str, shape: &[usize], dtype: Dtype) -> Scheme {
    let matrix = shape.len() >= 2;
    let quantizable = matrix && name.ends_with(".weight") && !name.contains("position_embedding");
    match dtype {
        Dtype::F32 => Scheme::F32,
        _ if !matrix => Scheme::F32,
        Dtype::F16 => Scheme::F16,
        _ if !quantizable => Scheme::F16,
        Dtype::Q8 => Scheme::Q8,
        Dtype::Q4 if q4_keeps_q8(name) => Scheme::Q8,
        Dtype::Q4 => Scheme::Q4 { block: Q4_BLOCK },
    }
}

/// One tensor as stored, with its rounding error.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub scheme: Scheme,
    pub bytes: usize,
    /// Max and mean |w − ŵ|.
    pub max_error: f32,
    pub mean_error: f32,
}

/// A tensor encoded for storage: `(key, dtype, shape, bytes)` entries (data, then scales).
struct Encoded {
    report: TensorReport,
    entries: Vec<(String, &'static str, Vec<usize>, Vec<u8>)>,
}

fn encode(name: &str, t: &HostTensor, scheme: Scheme) -> Encoded {
    let (rows, cols) = matrix_dims(&t.shape);
    let le32 = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (entries, back): (Vec<_>, Option<Vec<f32>>) = match scheme {
        Scheme::F32 => (vec![(name.to_string(), "F32", t.shape.clone(), le32(&t.data))], None),
        Scheme::F16 => {
            let h: Vec<half::f16> = t.data.iter().map(|&x| half::f16::from_f32(x)).collect();
            let bytes = h.iter().flat_map(|x| x.to_le_bytes()).collect();
            (vec![(name.to_string(), "F16", t.shape.clone(), bytes)], Some(h.iter().map(|x| x.to_f32()).collect()))
        }
        Scheme::Q8 => {
            let (codes, scales) = quantize_q8(&t.data, cols);
            let bytes: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
            let back = dequantize_q8(&bytes, &scales, cols);
            let entries = vec![
                (name.to_string(), "I8", vec![rows, cols], bytes),
                (format!("{name}.scale"), "F32", vec![rows], le32(&scales)),
            ];
            (entries, Some(back))
        }
        Scheme::Q4 { block } => {
            let (codes, scales) = quantize_q4(&t.data, cols, block);
            let back = dequantize_q4(&codes, &scales, cols, block);
            let blocks = scales.len() / rows.max(1);
            let entries = vec![
                (name.to_string(), "U8", vec![rows, codes.len() / rows.max(1)], codes),
                (format!("{name}.scale"), "F16", vec![rows, blocks], scales.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ];
            (entries, Some(back))
        }
    };
    let (max, sum) = match &back {
        None => (0.0, 0.0),
        Some(back) => t.data.iter().zip(back).map(|(a, b)| (a - b).abs()).fold((0.0f32, 0.0f64), |(m, s), d| (m.max(d), s + d as f64)),
    };
    let bytes = entries.iter().map(|e| e.3.len()).sum();
    Encoded {
        report: TensorReport {
            name: name.to_string(),
            shape: t.shape.clone(),
            scheme,
            bytes,
            max_error: max,
            mean_error: (sum / t.data.len().max(1) as f64) as f32,
        },
        entries,
    }
}

/// What to write, and how to describe it.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub dtype: Dtype,
    /// Target shard size in bytes (a tensor larger than this gets a shard of its own).
    pub shard_bytes: usize,
    /// Where the weights came from (a hub repo id or a folder name).
    pub source: String,
    pub card: ModelCard,
}

/// A converted model in memory: the manifest and the files it names.
#[derive(Debug, Clone)]
pub struct Converted {
    pub manifest: Manifest,
    pub manifest_json: String,
    /// Shards by file name.
    pub shards: HashMap<String, Vec<u8>>,
    pub tokenizer_json: Vec<u8>,
    pub report: Vec<TensorReport>,
}

impl Converted {
    /// sha256 of `manifest.json`: the model's identity (collections are keyed by it). Two
    /// conversions of the same checkpoint at the same dtype and card give the same.
    pub fn manifest_sha256(&self) -> String {
        sha256_hex(self.manifest_json.as_bytes())
    }

    /// Every file to write: shards in manifest order, the tokenizer, then `manifest.json`
    /// (last, so a directory with a manifest is complete).
    pub fn files(&self) -> Vec<(&str, &[u8])> {
        let mut out: Vec<(&str, &[u8])> =
            self.manifest.shards.iter().map(|s| (s.file.as_str(), self.shards[&s.file].as_slice())).collect();
        out.push((self.manifest.tokenizer.as_str(), &self.tokenizer_json));
        out.push(("manifest.json", self.manifest_json.as_bytes()));
        out
    }

    /// Loads the converted model as the app will (checksums, storage, shapes).
    pub async fn load(&self, choice: BackendChoice) -> Result<Clip> {
        Clip::from_converted_parts(&self.manifest_json, &self.shards, &self.tokenizer_json, choice).await
    }
}

/// Converts a checkpoint one tensor per [`Converter::step`].
pub struct Converter<'a> {
    checkpoint: &'a Checkpoint,
    options: ConvertOptions,
    config: serde_json::Value,
    todo: Vec<TensorInfo>,
    next: usize,
    done_bytes: u64,
    total_bytes: u64,
    encoded: Vec<Encoded>,
}

impl<'a> Converter<'a> {
    /// Checks the config (another architecture is refused here, before any weights are read).
    pub fn new(checkpoint: &'a Checkpoint, options: ConvertOptions) -> Result<Self> {
        let config: serde_json::Value = serde_json::from_str(&checkpoint.config_json)
            .map_err(|e| Error::Config { file: "config.json".into(), reason: format!("not valid JSON: {e}") })?;
        ClipConfig::from_hf_json(&checkpoint.config_json, "config.json")?;
        let todo = checkpoint.tensors.list();
        let total_bytes = todo.iter().map(|t| t.bytes).sum();
        Ok(Self { checkpoint, options, config, encoded: Vec::with_capacity(todo.len()), todo, next: 0, done_bytes: 0, total_bytes })
    }

    /// Checkpoint bytes converted so far, and in all.
    pub fn progress(&self) -> (u64, u64) {
        (self.done_bytes, self.total_bytes)
    }

    /// Reads and encodes the next tensor; `false` once every tensor is done.
    pub fn step(&mut self) -> Result<bool> {
        let Some(info) = self.todo.get(self.next) else { return Ok(false) };
        let t = self.checkpoint.tensors.get(&info.name)?;
        if t.data.len() != info.shape.iter().product::<usize>() {
            return Err(Error::ShapeMismatch { key: info.name.clone(), expected: info.shape.clone(), got: t.shape });
        }
        if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
            return Err(Error::Weights {
                file: self.checkpoint.weights_name.clone(),
                reason: format!("tensor `{}` holds a non-finite value ({}) at {i}: the file is corrupt", info.name, t.data[i]),
            });
        }
        self.encoded.push(encode(&info.name, &t, scheme_for(&info.name, &t.shape, self.options.dtype)));
        self.done_bytes += info.bytes;
        self.next += 1;
        Ok(true)
    }

    /// Groups the tensors into shards and writes the manifest.
    pub fn finish(mut self) -> Result<Converted> {
        while self.step()? {}
        let limit = self.options.shard_bytes.max(1);
        let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
        let mut size = 0;
        for (i, e) in self.encoded.iter().enumerate() {
            let b = e.report.bytes;
            if size > 0 && size + b > limit {
                groups.push(Vec::new());
                size = 0;
            }
            groups.last_mut().expect("non-empty").push(i);
            size += b;
        }
        let mut tensors = Vec::with_capacity(self.encoded.len());
        let mut shard_entries = Vec::with_capacity(groups.len());
        let mut shards = HashMap::new();
        for (s, group) in groups.iter().enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, groups.len());
            let entries: Vec<_> = group.iter().flat_map(|&i| std::mem::take(&mut self.encoded[i].entries)).collect();
            let (bytes, ranges) = write_safetensors_raw(&entries);
            let mut ranges = ranges.into_iter().zip(&entries);
            for &i in group {
                let r = &self.encoded[i].report;
                let mut part = || {
                    let ((start, end), entry) = ranges.next().expect("one range per entry");
                    Part { key: entry.0.clone(), start: start as u64, end: end as u64 }
                };
                let data = part();
                let scale = matches!(r.scheme, Scheme::Q8 | Scheme::Q4 { .. }).then(part);
                tensors.push(TensorEntry { name: r.name.clone(), shape: r.shape.clone(), scheme: r.scheme, shard: s, data, scale });
            }
            drop(entries);
            shard_entries.push(ShardEntry { file: file.clone(), bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) });
            shards.insert(file, bytes);
        }
        let json = |s: &Option<String>| s.as_deref().and_then(|s| serde_json::from_str(s).ok());
        let ck = self.checkpoint;
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            format_version: MANIFEST_VERSION,
            architecture: "clip".into(),
            source: self.options.source.clone(),
            dtype: self.options.dtype.name().into(),
            config: self.config,
            preprocessor: json(&ck.preprocessor_json),
            tokenizer: "tokenizer.json".into(),
            tokenizer_config: json(&ck.tokenizer_config_json),
            parameters: self.encoded.iter().map(|e| e.report.shape.iter().product::<usize>() as u64).sum(),
            card: self.options.card,
            tensors,
            shards: shard_entries,
        };
        let manifest_json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Input(e.to_string()))?;
        Ok(Converted {
            manifest,
            manifest_json,
            shards,
            tokenizer_json: ck.tokenizer_json.clone(),
            report: self.encoded.into_iter().map(|e| e.report).collect(),
        })
    }
}

/// Converts a checkpoint in one go.
pub fn convert(checkpoint: &Checkpoint, options: ConvertOptions) -> Result<Converted> {
    Converter::new(checkpoint, options)?.finish()
}

/// Prompt templates for models whose authors documented them, by a lower-case fragment of the
/// model's source or name; others get CLIP's "a photo of {}.".
pub fn known_templates(source: &str) -> Vec<String> {
    let s = source.to_lowercase();
    let t: &[&str] = if s.contains("plip") {
        &["An H&E image patch of {}."]
    } else if s.contains("quilt") {
        &["a histopathology image of {}."]
    } else if s.contains("pubmedclip") {
        &["a radiology image of {}."]
    } else if s.contains("conch") || s.contains("path") {
        &["an H&E image of {}."]
    } else {
        &["a photo of {}."]
    };
    t.iter().map(|t| t.to_string()).collect()
}

/// Images bundled for the fidelity check: two H&E tiles of the demo collection and two small
/// natural images of the golden set (colour and a photo), so general and pathology models both see
/// in-domain input.
pub const FIDELITY_IMAGES: [(&str, &[u8]); 4] = [
    ("tile-001.jpg", include_bytes!("../fidelity/tile-001.jpg")),
    ("tile-002.jpg", include_bytes!("../fidelity/tile-002.jpg")),
    ("photo-120x90.jpg", include_bytes!("../fidelity/photo-120x90.jpg")),
    ("rgba-64x48.png", include_bytes!("../fidelity/rgba-64x48.png")),
];

/// Prompts bundled for the fidelity check.
pub const FIDELITY_TEXTS: [&str; 6] = [
    "an H&E image of tumour.",
    "an H&E image patch of lymphocytes.",
    "a histopathology image of adipose tissue.",
    "a chest X-ray.",
    "a fundus photograph.",
    "a photo of a cat.",
];

/// A model's embeddings of the fidelity set.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub images: Vec<Vec<f32>>,
    pub texts: Vec<Vec<f32>>,
}

impl Probe {
    /// Embeds the bundled images and prompts (the CPU backend gives the same numbers on every
    /// machine).
    pub async fn of(clip: &Clip) -> Result<Self> {
        let mut pixels = Vec::new();
        for (name, bytes) in FIDELITY_IMAGES {
            pixels.push(clip.pixels(bytes, name, Exif::Apply)?);
        }
        let images = clip.embed_images(&pixels).await?;
        let (_, texts) = clip.embed_texts(&FIDELITY_TEXTS).await?;
        Ok(Self { images, texts })
    }
}

/// How close a converted model's embeddings are to the original's.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fidelity {
    pub image_min: f64,
    pub image_mean: f64,
    pub text_min: f64,
    pub text_mean: f64,
    /// Fraction of images whose zero-shot top-1 prompt is the same under both.
    pub agreement: f64,
}

impl Fidelity {
    pub fn compare(original: &Probe, converted: &Probe) -> Self {
        let cos = |a: &[f32], b: &[f32]| crate::dot(a, b) as f64;
        let pairs = |a: &[Vec<f32>], b: &[Vec<f32>]| a.iter().zip(b).map(|(a, b)| cos(a, b)).collect::<Vec<f64>>();
        let stats = |v: &[f64]| (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().sum::<f64>() / v.len().max(1) as f64);
        let (image_min, image_mean) = stats(&pairs(&original.images, &converted.images));
        let (text_min, text_mean) = stats(&pairs(&original.texts, &converted.texts));
        let top1 = |img: &[f32], txt: &[Vec<f32>]| (0..txt.len()).max_by(|&i, &j| cos(img, &txt[i]).total_cmp(&cos(img, &txt[j])));
        let agree = original
            .images
            .iter()
            .zip(&converted.images)
            .filter(|(a, b)| top1(a, &original.texts) == top1(b, &converted.texts))
            .count();
        Self { image_min, image_mean, text_min, text_mean, agreement: agree as f64 / original.images.len().max(1) as f64 }
    }

    /// The lower of the two minimum cosines.
    pub fn min(&self) -> f64 {
        self.image_min.min(self.text_min)
    }

    pub fn passes(&self, dtype: Dtype) -> bool {
        self.min() >= dtype.min_cosine()
    }
}

/// Embeds the fidelity set with the unconverted checkpoint (built on the CPU, then dropped so
/// that it and the converted model are never in memory together).
pub async fn probe_checkpoint(checkpoint: &Checkpoint) -> Result<Probe> {
    let clip = Clip::from_checkpoint(checkpoint, BackendChoice::Cpu).await?;
    Probe::of(&clip).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_keeps_the_measured_sensitive_text_tensors_in_q8() {
        for name in [
            "text_projection.weight",
            "text_model.encoder.layers.0.mlp.fc1.weight",
            "text_model.encoder.layers.0.self_attn.q_proj.weight",
            "text_model.encoder.layers.7.self_attn.v_proj.weight",
            "text_model.encoder.layers.11.self_attn.out_proj.weight",
        ] {
            assert!(q4_keeps_q8(name), "{name} stays q8");
        }
        for name in [
            "visual_projection.weight",
            "vision_model.encoder.layers.0.mlp.fc1.weight",
            "vision_model.encoder.layers.3.self_attn.v_proj.weight",
            "vision_model.encoder.layers.3.self_attn.out_proj.weight",
            "text_model.encoder.layers.10.mlp.fc2.weight",
            "text_model.encoder.layers.5.self_attn.q_proj.weight",
            "text_model.encoder.layers.1.self_attn.k_proj.weight",
            "text_model.embeddings.token_embedding.weight",
        ] {
            assert!(!q4_keeps_q8(name), "{name} is q4");
        }
    }

    #[test]
    fn known_models_get_their_authors_templates() {
        assert_eq!(known_templates("vinid--plip"), ["An H&E image patch of {}."]);
        assert_eq!(known_templates("openai/clip-vit-base-patch32"), ["a photo of {}."]);
    }
}
