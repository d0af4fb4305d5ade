//! OpenCLIP checkpoints (`open_clip_config.json` + `open_clip_pytorch_model.bin` or
//! `open_clip_model.safetensors`, as wisdomik/QuiltNet-B-32 ships) mapped onto the Hugging Face
//! `CLIPModel` layout, so that everything after reading (quantization, shards, the loaders in
//! `model-wasm`) is the same code for both.
//!
//! The architectures are the same network; only names and two details differ:
//! - attention keeps q, k and v in one `in_proj_weight` `[3W, W]` (and `in_proj_bias`), split here
//!   into `q_proj`, `k_proj`, `v_proj` in that order;
//! - the projections are matrices applied as `x @ P` (`visual.proj` `[W, E]`, `text_projection`
//!   `[W, E]`), transposed here into `nn.Linear` weights `[E, W]`.
//!
//! Only the plain ViT `CLIP` is supported: a timm or ResNet vision tower, a Hugging Face text tower,
//! attentional pooling or other pooling, `no_ln_pre`, projection biases are refused by name.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::checkpoint::{TensorInfo, Tensors};
use crate::error::{Error, Result};
use crate::weights::HostTensor;

/// The file that marks an OpenCLIP checkpoint directory.
pub const CONFIG: &str = "open_clip_config.json";
/// Its weights file, by preference.
pub const WEIGHTS: [&str; 3] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_model.bin"];

fn bad(reason: String) -> Error {
    Error::Config { file: CONFIG.into(), reason }
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn usize_of(cfg: &Value, key: &str, default: Option<usize>) -> Result<usize> {
    match get(cfg, key) {
        Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| bad(format!("`{key}` is not a whole number ({v})"))),
        None => default.ok_or_else(|| bad(format!("`{key}` is missing"))),
    }
}

/// Refuses the OpenCLIP variants this mapping does not cover, naming the setting.
/// A setting, and whether its value is one this mapping cannot honour.
type Check<'a> = (&'a str, &'a dyn Fn(&Value) -> bool);

fn refuse_variants(section: &str, cfg: &Value, unsupported: &[Check]) -> Result<()> {
    for (key, is_bad) in unsupported {
        if let Some(v) = get(cfg, key).filter(|v| is_bad(v)) {
            let what = match *key {
                "hf_model_name" if v.as_str().is_some_and(|m| m.to_lowercase().contains("bert")) => {
                    format!(" (a BERT text tower, as BiomedCLIP has: {v})")
                }
                "hf_model_name" => format!(" (a Hugging Face text tower: {v})"),
                "timm_model_name" if v.as_str().is_some_and(|m| m.contains("swin")) => format!(" (a Swin vision tower: {v})"),
                "timm_model_name" => format!(" (a timm vision tower: {v})"),
                _ => String::new(),
            };
            return Err(Error::UnsupportedArchitecture {
                file: CONFIG.into(),
                found: format!("{section}.{key} = {v}{what}"),
            });
        }
    }
    Ok(())
}

/// An OpenCLIP config mapped onto Hugging Face's: `config.json`, `preprocessor_config.json` and
/// the tower depths (to map the tensors).
pub struct MappedConfig {
    pub config_json: String,
    pub preprocessor_json: String,
    pub vision_layers: usize,
    pub text_layers: usize,
}

/// Maps `open_clip_config.json` onto a Hugging Face `CLIPModel` config and
/// `preprocessor_config.json`, refusing the variants this mapping does not cover by name.
pub fn map_config(json: &str) -> Result<MappedConfig> {
    let raw: Value = serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let model_cfg = get(&raw, "model_cfg").unwrap_or(&raw);
    let vision = get(model_cfg, "vision_cfg").ok_or_else(|| bad("no model_cfg.vision_cfg".into()))?;
    let text = get(model_cfg, "text_cfg").ok_or_else(|| bad("no model_cfg.text_cfg".into()))?;
    let truthy = |v: &Value| v.as_bool().unwrap_or(true);
    let not = |want: &'static str| move |v: &Value| v.as_str() != Some(want);
    let (not_tok, not_argmax, not_linear) = (not("tok"), not("argmax"), not("linear"));
    let is_list = |v: &Value| v.is_array();
    // The text tower first: BiomedCLIP is best known by its BERT text tower.
    refuse_variants("text_cfg", text, &[
        ("hf_model_name", &|v: &Value| v.is_string()),
        ("pool_type", &not_argmax),
        ("proj_type", &not_linear),
        ("proj_bias", &truthy),
        ("embed_cls", &truthy),
        ("no_causal_mask", &truthy),
        ("final_ln_after_pool", &truthy),
    ])?;
    refuse_variants("vision_cfg", vision, &[
        ("timm_model_name", &|v: &Value| v.is_string()),
        ("layers", &is_list),
        ("attentional_pool", &truthy),
        ("no_ln_pre", &truthy),
        ("final_ln_after_pool", &truthy),
        ("pool_type", &not_tok),
        ("output_tokens", &truthy),
        ("act_kwargs", &|_: &Value| true),
        ("norm_kwargs", &|_: &Value| true),
    ])?;
    if get(model_cfg, "custom_text").is_some_and(truthy) {
        return Err(Error::UnsupportedArchitecture { file: CONFIG.into(), found: "model_cfg.custom_text = true".into() });
    }

    let embed_dim = usize_of(model_cfg, "embed_dim", None)?;
    let quick_gelu = get(model_cfg, "quick_gelu").and_then(Value::as_bool).unwrap_or(false);
    let act = if quick_gelu { "quick_gelu" } else { "gelu" };
    let v_width = usize_of(vision, "width", Some(768))?;
    let v_layers = usize_of(vision, "layers", Some(12))?;
    let head_width = usize_of(vision, "head_width", Some(64))?;
    let image_size = usize_of(vision, "image_size", Some(224))?;
    let patch = usize_of(vision, "patch_size", Some(16))?;
    let v_mlp = (get(vision, "mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0) * v_width as f64) as usize;
    let t_width = usize_of(text, "width", Some(512))?;
    let t_layers = usize_of(text, "layers", Some(12))?;
    let t_heads = usize_of(text, "heads", Some(8))?;
    let context = usize_of(text, "context_length", Some(77))?;
    let vocab = usize_of(text, "vocab_size", Some(49408))?;
    let t_mlp = (get(text, "mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0) * t_width as f64) as usize;
    if head_width == 0 || v_width % head_width != 0 {
        return Err(bad(format!("vision width {v_width} is not a multiple of head_width {head_width}")));
    }
    let hf_config = json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": embed_dim,
        "logit_scale_init_value": 2.6592,
        // OpenCLIP pools text at argmax(input_ids): the end-of-text token has the highest id.
        "text_config": {
            "model_type": "clip_text_model", "vocab_size": vocab, "hidden_size": t_width, "intermediate_size": t_mlp,
            "num_hidden_layers": t_layers, "num_attention_heads": t_heads, "max_position_embeddings": context,
            "hidden_act": act, "layer_norm_eps": 1e-5, "bos_token_id": 49406, "eos_token_id": 2, "pad_token_id": 1,
            "projection_dim": embed_dim,
        },
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": v_width, "intermediate_size": v_mlp,
            "num_hidden_layers": v_layers, "num_attention_heads": v_width / head_width, "image_size": image_size,
            "patch_size": patch, "num_channels": 3, "hidden_act": act, "layer_norm_eps": 1e-5, "projection_dim": embed_dim,
        },
        "source_format": "open_clip",
    });

    let pre = get(&raw, "preprocess_cfg").cloned().unwrap_or(Value::Null);
    let floats3 = |key: &str, default: [f64; 3]| -> Result<Vec<f64>> {
        match get(&pre, key) {
            Some(v) => {
                let xs: Option<Vec<f64>> = v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect());
                xs.filter(|x| x.len() == 3).ok_or_else(|| bad(format!("preprocess_cfg.{key} must be three numbers ({v})")))
            }
            None => Ok(default.to_vec()),
        }
    };
    // OpenAI CLIP's statistics are OpenCLIP's defaults.
    let mean = floats3("mean", [0.48145466, 0.4578275, 0.40821073])?;
    let std = floats3("std", [0.26862954, 0.26130258, 0.27577711])?;
    if let Some(mode) = get(&pre, "resize_mode").and_then(Value::as_str).filter(|m| *m != "shortest") {
        return Err(bad(format!("preprocess_cfg.resize_mode = {mode:?} is not supported (the app resizes the shortest edge and centre-crops)")));
    }
    let preprocessor = json!({
        "image_processor_type": "CLIPImageProcessor", "do_resize": true, "size": {"shortest_edge": image_size},
        "resample": 3, "do_center_crop": true, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true, "image_mean": mean, "image_std": std,
        "do_convert_rgb": true,
    });

    Ok(MappedConfig {
        config_json: hf_config.to_string(),
        preprocessor_json: preprocessor.to_string(),
        vision_layers: v_layers,
        text_layers: t_layers,
    })
}

fn transpose(t: &HostTensor) -> HostTensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut data = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = t.data[i * c + j];
        }
    }
    HostTensor { shape: vec![c, r], data }
}

/// How one `CLIPModel` tensor is made from OpenCLIP's.
#[derive(Debug, Clone)]
enum Recipe {
    Same(String),
    /// Rows `k·W..(k+1)·W` of a fused `in_proj_weight` `[3W, W]` or `in_proj_bias` `[3W]`.
    Third(String, usize),
    Transpose(String),
}

/// A planned tensor: its shape, its bytes in the checkpoint, and how it is made.
type Planned = (Vec<usize>, u64, Recipe);

/// OpenCLIP tensors under `CLIPModel` names: renamed, split and transposed as they are read.
pub struct Mapped {
    inner: Box<dyn Tensors>,
    plan: BTreeMap<String, Planned>,
}

impl Mapped {
    /// Plans the mapping from the inner tensors' names and shapes. Tensors the network does not
    /// use (`attn_mask`, OpenCLIP's precomputed causal mask) are dropped; a tensor with no
    /// counterpart, or one missing, is an error naming it, so a checkpoint of another
    /// architecture is never half-read.
    pub fn new(inner: Box<dyn Tensors>, v_layers: usize, t_layers: usize) -> Result<Self> {
        let list: BTreeMap<String, TensorInfo> = inner.list().into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut used: HashSet<String> = HashSet::new();
        let mut plan = BTreeMap::new();
        let mut take = |dst: String, src: &str, make: &dyn Fn(&TensorInfo) -> Result<Planned>| -> Result<()> {
            let info = list.get(src).ok_or_else(|| Error::MissingTensor { key: src.to_string() })?;
            used.insert(src.to_string());
            plan.insert(dst, make(info)?);
            Ok(())
        };
        let same = |i: &TensorInfo| Ok((i.shape.clone(), i.bytes, Recipe::Same(i.name.clone())));
        let transposed = |i: &TensorInfo| match i.shape.as_slice() {
            [r, c] => Ok((vec![*c, *r], i.bytes, Recipe::Transpose(i.name.clone()))),
            s => Err(Error::ShapeMismatch { key: i.name.clone(), expected: vec![0, 0], got: s.to_vec() }),
        };
        let mut block = |src: &str, dst: &str| -> Result<()> {
            for (a, b) in [("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"), ("attn.out_proj", "self_attn.out_proj")] {
                for p in ["weight", "bias"] {
                    take(format!("{dst}.{b}.{p}"), &format!("{src}.{a}.{p}"), &same)?;
                }
            }
            for (k, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                for p in ["weight", "bias"] {
                    take(format!("{dst}.self_attn.{name}.{p}"), &format!("{src}.attn.in_proj_{p}"), &|i: &TensorInfo| {
                        let ok = match (p, i.shape.as_slice()) {
                            ("weight", [three, w]) => *three == 3 * w,
                            ("bias", [three]) => three % 3 == 0,
                            _ => false,
                        };
                        if !ok {
                            return Err(Error::Weights {
                                file: CONFIG.into(),
                                reason: format!("{} has shape {:?}; expected [3W, W] (weight) or [3W] (bias)", i.name, i.shape),
                            });
                        }
                        let mut shape = i.shape.clone();
                        shape[0] /= 3;
                        Ok((shape, i.bytes / 3, Recipe::Third(i.name.clone(), k)))
                    })?;
                }
            }
            Ok(())
        };
        for i in 0..v_layers {
            block(&format!("visual.transformer.resblocks.{i}"), &format!("vision_model.encoder.layers.{i}"))?;
        }
        for i in 0..t_layers {
            block(&format!("transformer.resblocks.{i}"), &format!("text_model.encoder.layers.{i}"))?;
        }
        take("vision_model.embeddings.class_embedding".into(), "visual.class_embedding", &same)?;
        take("vision_model.embeddings.position_embedding.weight".into(), "visual.positional_embedding", &same)?;
        take("vision_model.embeddings.patch_embedding.weight".into(), "visual.conv1.weight", &same)?;
        for (a, b) in [("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"), ("ln_final", "text_model.final_layer_norm")] {
            for p in ["weight", "bias"] {
                take(format!("{b}.{p}"), &format!("{a}.{p}"), &same)?;
            }
        }
        take("visual_projection.weight".into(), "visual.proj", &transposed)?;
        take("text_model.embeddings.token_embedding.weight".into(), "token_embedding.weight", &same)?;
        take("text_model.embeddings.position_embedding.weight".into(), "positional_embedding", &same)?;
        take("text_projection.weight".into(), "text_projection", &transposed)?;
        take("logit_scale".into(), "logit_scale", &same)?;

        let extra: Vec<&String> = list.keys().filter(|n| !used.contains(*n) && *n != "attn_mask").collect();
        if let Some(first) = extra.first() {
            return Err(Error::Weights {
                file: CONFIG.into(),
                reason: format!(
                    "the checkpoint has {} tensor(s) a plain ViT CLIP does not, e.g. `{first}` (more layers than its config says, or another architecture)",
                    extra.len()
                ),
            });
        }
        Ok(Self { inner, plan })
    }
}

impl Tensors for Mapped {
    fn list(&self) -> Vec<TensorInfo> {
        self.plan.iter().map(|(n, (shape, bytes, _))| TensorInfo { name: n.clone(), shape: shape.clone(), bytes: *bytes }).collect()
    }

    fn get(&self, name: &str) -> Result<HostTensor> {
        let (_, _, recipe) = self.plan.get(name).ok_or_else(|| Error::MissingTensor { key: name.to_string() })?;
        match recipe {
            Recipe::Same(src) => self.inner.get(src),
            Recipe::Transpose(src) => Ok(transpose(&self.inner.get(src)?)),
            Recipe::Third(src, k) => {
                let t = self.inner.get(src)?;
                let rows = t.shape[0] / 3;
                let cols: usize = t.shape[1..].iter().product();
                let mut shape = t.shape.clone();
                shape[0] = rows;
                Ok(HostTensor { shape, data: t.data[k * rows * cols..(k + 1) * rows * cols].to_vec() })
            }
        }
    }
}
