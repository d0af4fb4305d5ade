//! CLIP-family encoders for Obscura, on burn: the same code runs natively and in
//! `wasm32-unknown-unknown`, on the GPU (wgpu: WebGPU in the browser) or the CPU (burn-flex).
//!
//! What is computed here is meant to equal transformers' `CLIPModel` + `CLIPProcessor`:
//! preprocessing follows Pillow bit for bit ([`preprocess`]), tokenization uses the model's own
//! `tokenizer.json` ([`tokenizer`]), and the forward passes mirror `modeling_clip.py`
//! ([`model`]). Golden tests in `tests/` compare all three with transformers' outputs.
//!
//! ```no_run
//! # async fn demo() -> model_wasm::Result<()> {
//! use model_wasm::{BackendChoice, Clip, Exif};
//! let clip = Clip::load_dir("public/models/demo".as_ref(), BackendChoice::Auto).await?;
//! let bytes = std::fs::read("tile.png").unwrap();
//! let pixels = clip.pixels(&bytes, "tile.png", Exif::Apply)?;
//! let images = clip.embed_images(&[pixels]).await?;
//! let (_ids, texts) = clip.embed_texts(&["an H&E image of adipose tissue."]).await?;
//! let logits = clip.logits_per_image(&images, &texts);
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub mod collection;
pub mod config;
pub mod convert;
mod cpu_ops;
pub mod converted;
pub mod error;
pub mod model;
pub mod openclip;
mod pickle;
pub mod preprocess;
pub mod runtime;
pub mod slide;
pub mod tokenizer;
pub mod weights;

pub use config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig, TextPooling};
pub use error::{Error, ImageProblem, Result};
pub use preprocess::{Exif, Pixels, PreprocessConfig, Rgb8};
pub use runtime::{BackendChoice, BackendInfo, BackendKind, Encoder, Precision};
pub use tokenizer::ClipTokenizer;
pub use checkpoint::{Checkpoint, Folder, Layout, Source, Tensors};
pub use converted::{Manifest, ModelCard, Scheme};
pub use weights::{HostTensor, Weights};

/// The files of a Hugging Face CLIP checkpoint, as bytes (fetched in a browser or read from
/// disk).
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    pub config_json: String,
    /// `preprocessor_config.json`; CLIP defaults at the config's image size when absent.
    pub preprocessor_json: Option<String>,
    pub tokenizer_json: Vec<u8>,
    pub tokenizer_config_json: Option<String>,
    /// `model.safetensors` or `pytorch_model.bin`.
    pub weights: Vec<u8>,
    /// File name of `weights`, for messages and format detection.
    pub weights_name: String,
}

/// The files of a converted model directory (`weights-tool convert`): the manifest, its shards by
/// file name, and the tokenizer.
#[derive(Debug, Clone, Default)]
pub struct ConvertedFiles {
    pub manifest_json: String,
    pub shards: std::collections::HashMap<String, Vec<u8>>,
    pub tokenizer_json: Vec<u8>,
}

/// A CLIP model ready to embed: config, preprocessing, tokenizer and encoder.
#[derive(Debug)]
pub struct Clip {
    pub config: ClipConfig,
    pub preprocess: PreprocessConfig,
    pub tokenizer: ClipTokenizer,
    encoder: Encoder,
    backend: BackendInfo,
}

impl Clip {
    /// Build from checkpoint files on the chosen backend.
    pub async fn from_files(files: ModelFiles, choice: BackendChoice) -> Result<Self> {
        let weights = Weights::from_bytes(&files.weights, &files.weights_name)?;
        drop(files.weights);
        Self::build((&files.config_json, "config.json"), files.preprocessor_json.as_deref(), &files.tokenizer_json, files.tokenizer_config_json.as_deref(), weights, choice).await
    }

    /// Build from a lazily read checkpoint (Hugging Face or OpenCLIP), reading every tensor.
    pub async fn from_checkpoint(ck: &Checkpoint, choice: BackendChoice) -> Result<Self> {
        let weights = ck.weights()?;
        Self::build((&ck.config_json, "config.json"), ck.preprocessor_json.as_deref(), &ck.tokenizer_json, ck.tokenizer_config_json.as_deref(), weights, choice).await
    }

    async fn build(
        (config_json, config_file): (&str, &str),
        preprocessor_json: Option<&str>,
        tokenizer_json: &[u8],
        tokenizer_config_json: Option<&str>,
        weights: Weights,
        choice: BackendChoice,
    ) -> Result<Self> {
        let config = ClipConfig::from_hf_json(config_json, config_file)?;
        let preprocess = preprocess_config(&config, preprocessor_json)?;
        let pad = tokenizer_config_json.and_then(ClipTokenizer::pad_token_from_config);
        let tokenizer = ClipTokenizer::from_bytes(tokenizer_json, pad.as_deref(), config.text.max_position_embeddings)?;
        let (encoder, backend) = Encoder::load(&config, weights, choice).await?;
        Ok(Self { config, preprocess, tokenizer, encoder, backend })
    }

    /// Build from a converted model (manifest, shards, tokenizer). Every shard's size and sha256
    /// and every tensor's storage and shape are checked before the encoder is built.
    pub async fn from_converted(files: ConvertedFiles, choice: BackendChoice) -> Result<Self> {
        Self::from_converted_parts(&files.manifest_json, &files.shards, &files.tokenizer_json, choice).await
    }

    /// [`Clip::from_converted`] on borrowed files.
    pub async fn from_converted_parts(
        manifest_json: &str,
        shards: &std::collections::HashMap<String, Vec<u8>>,
        tokenizer_json: &[u8],
        choice: BackendChoice,
    ) -> Result<Self> {
        let manifest = Manifest::from_json(manifest_json)?;
        let preprocessor = manifest.preprocessor.as_ref().map(|p| p.to_string());
        let tokenizer_config = manifest.tokenizer_config.as_ref().map(|c| c.to_string());
        let weights = Weights::from_converted(&manifest, shards)?;
        Self::build((&manifest.config.to_string(), "manifest.json config"), preprocessor.as_deref(), tokenizer_json, tokenizer_config.as_deref(), weights, choice).await
    }

    /// Load a Hugging Face checkpoint directory (`config.json`, `model.safetensors` or
    /// `pytorch_model.bin`, `tokenizer.json`, optional `preprocessor_config.json` and
    /// `tokenizer_config.json`).
    /// A directory with a `manifest.json` is read as a converted model.
    #[cfg(not(target_family = "wasm"))]
    pub async fn load_dir(dir: &std::path::Path, choice: BackendChoice) -> Result<Self> {
        if dir.join("manifest.json").exists() {
            Self::from_converted(read_converted_dir(dir)?, choice).await
        } else {
            Self::from_files(read_model_dir(dir)?, choice).await
        }
    }

    pub fn backend(&self) -> &BackendInfo {
        &self.backend
    }

    /// Decode and preprocess one image file.
    pub fn pixels(&self, bytes: &[u8], name: &str, exif: Exif) -> Result<Pixels> {
        preprocess::load_pixels(bytes, name, exif, &self.preprocess)
    }

    /// Preprocess decoded RGB (a slide patch) as an image file would be.
    pub fn pixels_of(&self, img: &Rgb8) -> Pixels {
        preprocess::preprocess(img, &self.preprocess)
    }

    /// Side of the square the model takes as input (a slide patch's size).
    pub fn input_size(&self) -> u32 {
        self.preprocess.output_size().map(|(h, _)| h).unwrap_or(self.config.vision.image_size as u32)
    }

    /// Unnormalised image features, `[n, projection_dim]`.
    pub async fn image_features(&self, pixels: &[Pixels]) -> Result<Vec<Vec<f32>>> {
        self.encoder.image_features(pixels).await
    }

    /// Unnormalised text features for token ids.
    pub async fn text_features(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.encoder.text_features(ids).await
    }

    /// L2-normalised image embeddings.
    pub async fn embed_images(&self, pixels: &[Pixels]) -> Result<Vec<Vec<f32>>> {
        Ok(self.image_features(pixels).await?.into_iter().map(l2_normalize).collect())
    }

    /// Token ids and L2-normalised text embeddings.
    pub async fn embed_texts(&self, texts: &[&str]) -> Result<(Vec<Vec<u32>>, Vec<Vec<f32>>)> {
        if texts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids = self.tokenizer.encode_batch(texts)?;
        let emb = self.text_features(&ids).await?.into_iter().map(l2_normalize).collect();
        Ok((ids, emb))
    }

    /// `exp(logit_scale) * image · text` for normalised embeddings, `[images][texts]`.
    pub fn logits_per_image(&self, images: &[Vec<f32>], texts: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let scale = self.encoder.logit_scale().exp();
        images.iter().map(|i| texts.iter().map(|t| scale * dot(i, t)).collect()).collect()
    }

    /// The learned temperature as stored (its exponent scales the logits).
    pub fn logit_scale(&self) -> f32 {
        self.encoder.logit_scale()
    }
}

/// The preprocessing of `config`'s vision tower, from `preprocessor_config.json` if given; its
/// output size must be the tower's.
fn preprocess_config(config: &ClipConfig, json: Option<&str>) -> Result<PreprocessConfig> {
    let preprocess = match json {
        Some(json) => PreprocessConfig::from_json(json, "preprocessor_config.json")?,
        None => PreprocessConfig::clip(config.vision.image_size as u32),
    };
    if let Some((h, w)) = preprocess.output_size() {
        let s = config.vision.image_size as u32;
        if (h, w) != (s, s) {
            return Err(Error::Config {
                file: "preprocessor_config.json".into(),
                reason: format!("produces {h}x{w} images but the vision tower expects {s}x{s}"),
            });
        }
    }
    Ok(preprocess)
}

/// Reads a converted model directory: `manifest.json`, the shards it lists, its tokenizer.
#[cfg(not(target_family = "wasm"))]
pub fn read_converted_dir(dir: &std::path::Path) -> Result<ConvertedFiles> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|source| Error::Io { path: dir.join(name).display().to_string(), source })
    };
    let manifest_json = String::from_utf8_lossy(&read("manifest.json")?).into_owned();
    let manifest = Manifest::from_json(&manifest_json)?;
    let plain = |name: &str| {
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::Weights { file: name.into(), reason: "manifest.json may name only plain files".into() });
        }
        Ok(())
    };
    plain(&manifest.tokenizer)?;
    let mut shards = std::collections::HashMap::new();
    for shard in &manifest.shards {
        plain(&shard.file)?;
        shards.insert(shard.file.clone(), read(&shard.file)?);
    }
    Ok(ConvertedFiles { tokenizer_json: read(&manifest.tokenizer)?, manifest_json, shards })
}

#[cfg(not(target_family = "wasm"))]
pub fn read_model_dir(dir: &std::path::Path) -> Result<ModelFiles> {
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|source| Error::Io { path: dir.join(name).display().to_string(), source });
    let read_opt = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let text = |name: &str| read(name).map(|b| String::from_utf8_lossy(&b).into_owned());
    let (weights, weights_name) = if dir.join("model.safetensors").exists() {
        (read("model.safetensors")?, "model.safetensors")
    } else if dir.join("pytorch_model.bin").exists() {
        (read("pytorch_model.bin")?, "pytorch_model.bin")
    } else {
        return Err(Error::Weights {
            file: dir.display().to_string(),
            reason: "no model.safetensors or pytorch_model.bin in the directory".into(),
        });
    };
    Ok(ModelFiles {
        config_json: text("config.json")?,
        preprocessor_json: read_opt("preprocessor_config.json"),
        tokenizer_json: read("tokenizer.json")?,
        tokenizer_config_json: read_opt("tokenizer_config.json"),
        weights,
        weights_name: weights_name.into(),
    })
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scale to unit length (a zero vector stays zero).
pub fn l2_normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() as f32;
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}
