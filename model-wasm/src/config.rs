//! `CLIPConfig` as Hugging Face writes it in `config.json`.
//!
//! Field names and defaults mirror transformers' `configuration_clip.py` (`CLIPTextConfig`,
//! `CLIPVisionConfig`, `CLIPConfig`), so a config that omits a field means what it means there.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Activation inside the MLP blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, the original OpenAI CLIP.
    QuickGelu,
    /// Exact `x * Φ(x)` with erf (PyTorch's default `nn.GELU()`).
    Gelu,
}

impl Activation {
    fn parse(name: &str, file: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(Error::Config {
                file: file.to_string(),
                reason: format!("hidden_act `{other}` is not supported (quick_gelu, gelu)"),
            }),
        }
    }
}

/// The text transformer (`text_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub eos_token_id: u32,
}

/// The vision transformer (`vision_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

/// A whole CLIP model. `logit_scale` is not here: it is a learned tensor and comes with the
/// weights (checkpoints differ from `logit_scale_init_value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
}

/// How the text tower picks the token whose hidden state becomes the text embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPooling {
    /// Old checkpoints (`eos_token_id == 2`, e.g. openai/clip-vit-base-patch32): the position of
    /// the largest token id, which is the EOS id in CLIP's vocabulary.
    ArgmaxId,
    /// The first position holding this id.
    FirstEos(u32),
}

impl ClipTextConfig {
    /// Values of openai/clip-vit-base-patch32's `config.json`, `text_config`.
    pub fn vit_base_patch32() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        }
    }

    /// transformers `CLIPTextTransformer.forward`: `eos_token_id == 2` selects the legacy
    /// argmax pooling, anything else the first occurrence of the EOS id.
    pub fn pooling(&self) -> TextPooling {
        if self.eos_token_id == 2 { TextPooling::ArgmaxId } else { TextPooling::FirstEos(self.eos_token_id) }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

impl ClipVisionConfig {
    /// Values of openai/clip-vit-base-patch32's `config.json`, `vision_config`.
    pub fn vit_base_patch32() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

impl ClipConfig {
    /// openai/clip-vit-base-patch32.
    pub fn vit_base_patch32() -> Self {
        Self {
            text: ClipTextConfig::vit_base_patch32(),
            vision: ClipVisionConfig::vit_base_patch32(),
            projection_dim: 512,
        }
    }

    /// Parse a Hugging Face `config.json`. `file` names the source in error messages.
    pub fn from_hf_json(json: &str, file: &str) -> Result<Self> {
        let raw: RawClipConfig = serde_json::from_str(json).map_err(|e| Error::Config {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        let model_type = raw.model_type.clone().unwrap_or_default();
        let is_clip_arch = raw.architectures.iter().any(|a| a == "CLIPModel");
        if model_type != "clip" && !is_clip_arch {
            let found = if !model_type.is_empty() {
                format!("model_type `{model_type}`")
            } else if !raw.architectures.is_empty() {
                format!("architectures {:?}", raw.architectures)
            } else {
                "no model_type or architectures".to_string()
            };
            return Err(Error::UnsupportedArchitecture { file: file.to_string(), found });
        }
        let t = raw.text_config.unwrap_or_default();
        let v = raw.vision_config.unwrap_or_default();
        if let Some(mt) = t.model_type.as_deref().filter(|m| *m != "clip_text_model") {
            return Err(Error::UnsupportedArchitecture {
                file: file.to_string(),
                found: format!("text_config.model_type `{mt}`"),
            });
        }
        if let Some(mt) = v.model_type.as_deref().filter(|m| *m != "clip_vision_model") {
            return Err(Error::UnsupportedArchitecture {
                file: file.to_string(),
                found: format!("vision_config.model_type `{mt}`"),
            });
        }
        let config = Self {
            text: ClipTextConfig {
                vocab_size: t.vocab_size.unwrap_or(49408),
                hidden_size: t.hidden_size.unwrap_or(512),
                intermediate_size: t.intermediate_size.unwrap_or(2048),
                num_hidden_layers: t.num_hidden_layers.unwrap_or(12),
                num_attention_heads: t.num_attention_heads.unwrap_or(8),
                max_position_embeddings: t.max_position_embeddings.unwrap_or(77),
                hidden_act: Activation::parse(t.hidden_act.as_deref().unwrap_or("quick_gelu"), file)?,
                layer_norm_eps: t.layer_norm_eps.unwrap_or(1e-5),
                eos_token_id: t.eos_token_id.unwrap_or(49407),
            },
            vision: ClipVisionConfig {
                hidden_size: v.hidden_size.unwrap_or(768),
                intermediate_size: v.intermediate_size.unwrap_or(3072),
                num_hidden_layers: v.num_hidden_layers.unwrap_or(12),
                num_attention_heads: v.num_attention_heads.unwrap_or(12),
                num_channels: v.num_channels.unwrap_or(3),
                image_size: v.image_size.unwrap_or(224),
                patch_size: v.patch_size.unwrap_or(32),
                hidden_act: Activation::parse(v.hidden_act.as_deref().unwrap_or("quick_gelu"), file)?,
                layer_norm_eps: v.layer_norm_eps.unwrap_or(1e-5),
            },
            projection_dim: raw.projection_dim.unwrap_or(512),
        };
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::Config { file: file.to_string(), reason });
        let (t, v) = (&self.text, &self.vision);
        if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
            return bad(format!(
                "text hidden_size {} is not divisible by num_attention_heads {}",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if v.num_attention_heads == 0 || v.hidden_size % v.num_attention_heads != 0 {
            return bad(format!(
                "vision hidden_size {} is not divisible by num_attention_heads {}",
                v.hidden_size, v.num_attention_heads
            ));
        }
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return bad(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if v.num_channels != 3 {
            return bad(format!("vision num_channels {} (only RGB, 3, is supported)", v.num_channels));
        }
        Ok(())
    }
}

#[derive(Deserialize, Default)]
struct RawClipConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    projection_dim: Option<usize>,
    text_config: Option<RawTower>,
    vision_config: Option<RawTower>,
}

#[derive(Deserialize, Default)]
struct RawTower {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    eos_token_id: Option<u32>,
    num_channels: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_eos_pools_at_argmax() {
        let json = r#"{"model_type":"clip","text_config":{"eos_token_id":2},"vision_config":{}}"#;
        let c = ClipConfig::from_hf_json(json, "config.json").unwrap();
        assert_eq!(c.text.pooling(), TextPooling::ArgmaxId);
        assert_eq!(c, ClipConfig::vit_base_patch32());
    }

    #[test]
    fn new_eos_pools_at_first_eos() {
        let json = r#"{"model_type":"clip","text_config":{"hidden_act":"gelu"},"vision_config":{"hidden_act":"gelu"}}"#;
        let c = ClipConfig::from_hf_json(json, "config.json").unwrap();
        assert_eq!(c.text.pooling(), TextPooling::FirstEos(49407));
        assert_eq!(c.vision.hidden_act, Activation::Gelu);
    }

    #[test]
    fn other_architectures_are_refused_by_name() {
        // BiomedCLIP-style: a BERT text tower.
        let json = r#"{"model_type":"clip","text_config":{"model_type":"bert"},"vision_config":{}}"#;
        let err = ClipConfig::from_hf_json(json, "config.json").unwrap_err().to_string();
        assert!(err.contains("bert"), "{err}");
        let json = r#"{"model_type":"siglip","architectures":["SiglipModel"]}"#;
        let err = ClipConfig::from_hf_json(json, "config.json").unwrap_err().to_string();
        assert!(err.contains("siglip"), "{err}");
        let err = ClipConfig::from_hf_json("{", "config.json").unwrap_err().to_string();
        assert!(err.starts_with("config config.json"), "{err}");
    }

    #[test]
    fn unknown_activation_is_an_error() {
        let json = r#"{"model_type":"clip","text_config":{"hidden_act":"relu"}}"#;
        let err = ClipConfig::from_hf_json(json, "c.json").unwrap_err().to_string();
        assert!(err.contains("relu"), "{err}");
    }
}
