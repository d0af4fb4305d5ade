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

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};
use model_wasm::weights::{HostTensor, Weights, write_safetensors};
use model_wasm::ModelFiles;
use serde_json::{Value, json};

/// The file that marks an OpenCLIP checkpoint directory.
pub const CONFIG: &str = "open_clip_config.json";
const WEIGHTS: [&str; 3] = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_model.bin"];

pub fn is_open_clip(dir: &Path) -> bool {
    dir.join(CONFIG).exists()
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn usize_of(cfg: &Value, key: &str, default: Option<usize>) -> anyhow::Result<usize> {
    match get(cfg, key) {
        Some(v) => v.as_u64().map(|x| x as usize).with_context(|| format!("{CONFIG}: `{key}` is not a whole number ({v})")),
        None => default.with_context(|| format!("{CONFIG}: `{key}` is missing")),
    }
}

/// Refuses the OpenCLIP variants this mapping does not cover, naming the setting.
/// A setting, and whether its value is one this mapping cannot honour.
type Check<'a> = (&'a str, &'a dyn Fn(&Value) -> bool);

fn refuse_variants(section: &str, cfg: &Value, unsupported: &[Check]) -> anyhow::Result<()> {
    for (key, bad) in unsupported {
        if let Some(v) = get(cfg, key).filter(|v| bad(v)) {
            bail!("{CONFIG}: {section}.{key} = {v} is not supported (only the plain ViT CLIP architecture is)");
        }
    }
    Ok(())
}

/// Reads an OpenCLIP checkpoint directory as Hugging Face-shaped [`ModelFiles`]. The tokenizer is
/// the directory's `tokenizer.json`, else `tokenizer` (OpenCLIP models use CLIP's BPE: any CLIP
/// `tokenizer.json` serves).
pub fn read_dir(dir: &Path, tokenizer: Option<&Path>) -> anyhow::Result<ModelFiles> {
    let config_path = dir.join(CONFIG);
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?)
        .with_context(|| format!("{} is not valid JSON", config_path.display()))?;
    let model_cfg = get(&raw, "model_cfg").unwrap_or(&raw);
    let vision = get(model_cfg, "vision_cfg").with_context(|| format!("{CONFIG}: no model_cfg.vision_cfg"))?;
    let text = get(model_cfg, "text_cfg").with_context(|| format!("{CONFIG}: no model_cfg.text_cfg"))?;
    let truthy = |v: &Value| v.as_bool().unwrap_or(true);
    let not = |want: &'static str| move |v: &Value| v.as_str() != Some(want);
    let (not_tok, not_argmax, not_linear) = (not("tok"), not("argmax"), not("linear"));
    let is_list = |v: &Value| v.is_array();
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
    refuse_variants("text_cfg", text, &[
        ("hf_model_name", &|v: &Value| v.is_string()),
        ("pool_type", &not_argmax),
        ("proj_type", &not_linear),
        ("proj_bias", &truthy),
        ("embed_cls", &truthy),
        ("no_causal_mask", &truthy),
        ("final_ln_after_pool", &truthy),
    ])?;
    if get(model_cfg, "custom_text").is_some_and(truthy) {
        bail!("{CONFIG}: model_cfg.custom_text = true is not supported (only the plain ViT CLIP architecture is)");
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
    if v_width % head_width != 0 {
        bail!("{CONFIG}: vision width {v_width} is not a multiple of head_width {head_width}");
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
    let floats3 = |key: &str, default: [f64; 3]| -> anyhow::Result<Vec<f64>> {
        match get(&pre, key) {
            Some(v) => {
                let xs: Option<Vec<f64>> = v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect());
                xs.filter(|x| x.len() == 3).with_context(|| format!("{CONFIG}: preprocess_cfg.{key} must be three numbers ({v})"))
            }
            None => Ok(default.to_vec()),
        }
    };
    // OpenAI CLIP's statistics are OpenCLIP's defaults.
    let mean = floats3("mean", [0.48145466, 0.4578275, 0.40821073])?;
    let std = floats3("std", [0.26862954, 0.26130258, 0.27577711])?;
    if let Some(mode) = get(&pre, "resize_mode").and_then(Value::as_str).filter(|m| *m != "shortest") {
        bail!("{CONFIG}: preprocess_cfg.resize_mode = {mode:?} is not supported (the app resizes the shortest edge and centre-crops)");
    }
    let preprocessor = json!({
        "image_processor_type": "CLIPImageProcessor", "do_resize": true, "size": {"shortest_edge": image_size},
        "resample": 3, "do_center_crop": true, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true, "image_mean": mean, "image_std": std,
        "do_convert_rgb": true,
    });

    let weights_file = WEIGHTS
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .with_context(|| format!("{}: no {} found", dir.display(), WEIGHTS.join(" or ")))?;
    let name = weights_file.file_name().expect("a file").to_string_lossy().into_owned();
    let bytes = std::fs::read(&weights_file).with_context(|| format!("reading {}", weights_file.display()))?;
    let source = Weights::from_bytes(&bytes, &name)?;
    drop(bytes);
    let mapped = map_weights(&source, v_layers, t_layers).with_context(|| format!("mapping {name} onto CLIP"))?;
    let refs: Vec<(&str, &HostTensor)> = mapped.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let weights = write_safetensors(&refs);

    let tokenizer_path = if dir.join("tokenizer.json").exists() {
        dir.join("tokenizer.json")
    } else {
        tokenizer.map(Path::to_path_buf).with_context(|| {
            format!("{} has no tokenizer.json: pass --tokenizer with a CLIP tokenizer.json (e.g. public/models/demo/tokenizer.json)", dir.display())
        })?
    };
    Ok(ModelFiles {
        config_json: hf_config.to_string(),
        preprocessor_json: Some(preprocessor.to_string()),
        tokenizer_json: std::fs::read(&tokenizer_path).with_context(|| format!("reading {}", tokenizer_path.display()))?,
        tokenizer_config_json: None,
        weights,
        weights_name: format!("{name} (OpenCLIP, mapped)"),
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

/// Renames, splits and transposes OpenCLIP tensors into `CLIPModel` names. Tensors the network
/// does not use (`attn_mask`, OpenCLIP's precomputed causal mask) are dropped; a tensor with no
/// counterpart is an error naming it, so a checkpoint of another architecture is never half-read.
pub fn map_weights(w: &Weights, v_layers: usize, t_layers: usize) -> anyhow::Result<Vec<(String, HostTensor)>> {
    let mut out: Vec<(String, HostTensor)> = Vec::new();
    let mut used: HashSet<String> = HashSet::new();
    let mut take = |name: &str| -> anyhow::Result<HostTensor> {
        let t = w.get(name).with_context(|| format!("the checkpoint has no tensor `{name}`"))?;
        used.insert(name.to_string());
        Ok(t.clone())
    };
    let mut push = |name: String, t: HostTensor| out.push((name, t));

    let block = |take: &mut dyn FnMut(&str) -> anyhow::Result<HostTensor>,
                 push: &mut dyn FnMut(String, HostTensor),
                 src: &str,
                 dst: &str|
     -> anyhow::Result<()> {
        for (a, b) in [("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2"), ("attn.out_proj", "self_attn.out_proj")] {
            for p in ["weight", "bias"] {
                push(format!("{dst}.{b}.{p}"), take(&format!("{src}.{a}.{p}"))?);
            }
        }
        let qkv_w = take(&format!("{src}.attn.in_proj_weight"))?;
        let qkv_b = take(&format!("{src}.attn.in_proj_bias"))?;
        let (three, width) = (qkv_w.shape[0], qkv_w.shape.get(1).copied().unwrap_or(0));
        if three != 3 * width || qkv_b.shape != [three] {
            bail!("{src}.attn.in_proj_weight has shape {:?} (and bias {:?}); expected [3W, W] and [3W]", qkv_w.shape, qkv_b.shape);
        }
        for (k, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            let rows = k * width..(k + 1) * width;
            push(
                format!("{dst}.self_attn.{name}.weight"),
                HostTensor { shape: vec![width, width], data: qkv_w.data[rows.start * width..rows.end * width].to_vec() },
            );
            push(format!("{dst}.self_attn.{name}.bias"), HostTensor { shape: vec![width], data: qkv_b.data[rows].to_vec() });
        }
        Ok(())
    };

    // Vision tower.
    push("vision_model.embeddings.class_embedding".into(), take("visual.class_embedding")?);
    push("vision_model.embeddings.position_embedding.weight".into(), take("visual.positional_embedding")?);
    push("vision_model.embeddings.patch_embedding.weight".into(), take("visual.conv1.weight")?);
    for (a, b) in [("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm")] {
        for p in ["weight", "bias"] {
            push(format!("{b}.{p}"), take(&format!("{a}.{p}"))?);
        }
    }
    for i in 0..v_layers {
        block(&mut take, &mut push, &format!("visual.transformer.resblocks.{i}"), &format!("vision_model.encoder.layers.{i}"))?;
    }
    let proj = take("visual.proj")?;
    push("visual_projection.weight".into(), transpose(&proj));

    // Text tower.
    push("text_model.embeddings.token_embedding.weight".into(), take("token_embedding.weight")?);
    push("text_model.embeddings.position_embedding.weight".into(), take("positional_embedding")?);
    for i in 0..t_layers {
        block(&mut take, &mut push, &format!("transformer.resblocks.{i}"), &format!("text_model.encoder.layers.{i}"))?;
    }
    for p in ["weight", "bias"] {
        push(format!("text_model.final_layer_norm.{p}"), take(&format!("ln_final.{p}"))?);
    }
    let proj = take("text_projection")?;
    push("text_projection.weight".into(), transpose(&proj));
    push("logit_scale".into(), take("logit_scale")?);

    let extra: Vec<&str> = w.names().filter(|n| !used.contains(*n) && *n != "attn_mask").collect();
    if let Some(first) = extra.first() {
        bail!(
            "the checkpoint has {} tensor(s) a plain ViT CLIP does not, e.g. `{first}` (more layers than its config says, or another architecture)",
            extra.len()
        );
    }
    Ok(out)
}
