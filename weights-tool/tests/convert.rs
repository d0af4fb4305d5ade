//! `convert` → load → embed round trips against transformers' golden embeddings, for every dtype,
//! from safetensors and from `pytorch_model.bin`; and the errors a damaged or mismatched
//! converted model gives (each specific, nothing loaded).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weights-tool"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weights-tool-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

fn convert(model: &Path, dtype: &str, out: &Path) {
    let (o, stderr) = run(tool().arg("convert").arg(model).arg("--out").arg(out).args(["--dtype", dtype, "--shard-mb", "1"]));
    assert!(o.status.success(), "convert {dtype}: {stderr}");
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
}

/// Embeds every lossless golden image (EXIF applied; JPEG decoders differ slightly, see
/// tests/golden.rs) and every text with `model`; returns the minimum cosine to transformers' fp32
/// embeddings over images and over texts.
fn min_cosines(model: &Path, golden_name: &str) -> (f64, f64) {
    let g = golden();
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.join(format!("{golden_name}.json"))).unwrap()).unwrap();
    let mut cmd = tool();
    cmd.args(["embed", "--backend", "cpu", "--model"]).arg(model);
    let images: Vec<&serde_json::Value> =
        gold["images"].as_array().unwrap().iter().filter(|e| e["exif"] == "apply" && e["lossy"] == false).collect();
    for e in &images {
        cmd.arg("--image").arg(g.join("images").join(e["file"].as_str().unwrap()));
    }
    let texts = gold["texts"].as_array().unwrap();
    for t in texts {
        cmd.arg("--text").arg(t["text"].as_str().unwrap());
    }
    let (o, stderr) = run(&mut cmd);
    assert!(o.status.success(), "embed {}: {stderr}", model.display());
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let image_min = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&images)
        .map(|(got, want)| cosine(&floats(&got["embedding"]), &floats(&want["embedding"])))
        .fold(f64::INFINITY, f64::min);
    let text_min = json["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(texts)
        .map(|(got, want)| {
            assert_eq!(got["input_ids"], want["input_ids"], "the converted tokenizer is the original");
            cosine(&floats(&got["embedding"]), &floats(&want["embedding"]))
        })
        .fold(f64::INFINITY, f64::min);
    (image_min, text_min)
}

#[test]
fn every_dtype_round_trips_from_safetensors_and_bin() {
    let g = golden();
    // tiny-quickgelu-eos2 also ships as pytorch_model.bin: convert that copy alone.
    let bin_only = scratch("bin-only");
    std::fs::create_dir_all(&bin_only).unwrap();
    let src = g.join("models/tiny-quickgelu-eos2");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "model.safetensors" {
            std::fs::copy(&path, bin_only.join(path.file_name().unwrap())).unwrap();
        }
    }
    // (dtype, minimum cosine to transformers' fp32 embeddings). q4 is below the 0.98 aimed for
    // on these 16- and 32-wide random models (measured min over images / texts: 0.957 / 0.985 for
    // tiny-gelu, 0.961 / 0.966 for tiny-quickgelu; full-size ViT-B/32 reaches 0.991 / 0.990, see
    // BENCHMARKS.md); it is asserted where it is, so that it cannot get worse unnoticed.
    let mut report = Vec::new();
    for (model, golden_name, q4_min) in [
        (g.join("models/tiny-gelu-eos49407"), "tiny-gelu-eos49407", 0.95),
        (bin_only.clone(), "tiny-quickgelu-eos2", 0.95),
    ] {
        for (dtype, min) in [("f32", 0.99999), ("f16", 0.999), ("q8", 0.995), ("q4", q4_min)] {
            let out = scratch(&format!("{golden_name}-{dtype}"));
            convert(&model, dtype, &out);
            let (image, text) = min_cosines(&out, golden_name);
            report.push(format!("{golden_name} {dtype}: min cosine images {image:.6}, texts {text:.6}"));
            assert!(image >= min && text >= min, "{golden_name} {dtype}: {image} {text} < {min}");
            std::fs::remove_dir_all(out).ok();
        }
    }
    eprintln!("{}", report.join("\n"));
    std::fs::remove_dir_all(bin_only).ok();
}

/// An OpenCLIP checkpoint (`open_clip_config.json`, `open_clip_pytorch_model.bin`: fused
/// `in_proj_weight` attention, `x @ P` projections) embeds as open_clip does, read directly and
/// after conversion. Golden values: tests/golden/generate_openclip.py.
#[test]
fn open_clip_checkpoints_map_onto_clip_and_convert() {
    let model = golden().join("models/tiny-openclip");
    let mut report = Vec::new();
    let (image, text) = min_cosines(&model, "tiny-openclip");
    report.push(format!("tiny-openclip read directly: min cosine images {image:.7}, texts {text:.7}"));
    assert!(image >= 0.99999 && text >= 0.99999, "{image} {text}");
    for (dtype, min) in [("f32", 0.99999), ("q8", 0.995)] {
        let out = scratch(&format!("openclip-{dtype}"));
        convert(&model, dtype, &out);
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["config"]["source_format"], "open_clip", "the manifest says where the config came from");
        let (image, text) = min_cosines(&out, "tiny-openclip");
        report.push(format!("tiny-openclip {dtype}: min cosine images {image:.6}, texts {text:.6}"));
        assert!(image >= min && text >= min, "{dtype}: {image} {text} < {min}");
        std::fs::remove_dir_all(out).ok();
    }
    eprintln!("{}", report.join("\n"));
}

/// OpenCLIP variants the mapping does not cover are refused by name, before anything is written.
#[test]
fn unsupported_open_clip_checkpoints_are_refused_by_name() {
    let src = golden().join("models/tiny-openclip");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("open_clip_config.json")).unwrap()).unwrap();
    let with = |path: &[&str], value: serde_json::Value| {
        let mut c = config.clone();
        let (last, parents) = path.split_last().unwrap();
        let mut at = &mut c;
        for p in parents {
            at = &mut at[*p];
        }
        at[*last] = value;
        c.to_string()
    };
    let config = config.to_string();
    let cases = [
        (with(&["model_cfg", "vision_cfg", "timm_model_name"], "convnext_base".into()), "vision_cfg.timm_model_name"),
        (with(&["model_cfg", "text_cfg", "hf_model_name"], "microsoft/BiomedNLP-PubMedBERT".into()), "text_cfg.hf_model_name"),
        (with(&["model_cfg", "vision_cfg", "layers"], 1.into()), "visual.transformer.resblocks.1"),
        (with(&["model_cfg", "vision_cfg", "layers"], 3.into()), "visual.transformer.resblocks.2.ln_1.weight"),
        (with(&["preprocess_cfg", "resize_mode"], "squash".into()), "resize_mode"),
    ];
    for (i, (cfg, expected)) in cases.iter().enumerate() {
        assert_ne!(cfg, &config, "case {i} changes the config");
        let dir = scratch(&format!("openclip-bad-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["open_clip_pytorch_model.bin", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("open_clip_config.json"), cfg).unwrap();
        let out = dir.join("out");
        let (o, stderr) = run(tool().arg("convert").arg(&dir).arg("--out").arg(&out));
        assert!(!o.status.success() && stderr.contains(expected), "case {i}: {stderr}");
        assert!(!out.exists(), "case {i}: nothing written");
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn quantized_files_are_smaller_and_inspect_reports_them() {
    let model = golden().join("models/tiny-gelu-eos49407");
    let mut sizes = Vec::new();
    for dtype in ["f32", "q8", "q4"] {
        let out = scratch(&format!("size-{dtype}"));
        convert(&model, dtype, &out);
        let (o, stderr) = run(tool().arg("inspect").arg(&out));
        assert!(o.status.success(), "{stderr}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("sha256 ok") && text.contains(&format!("dtype         {dtype}")), "{text}");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
        sizes.push(manifest["shards"].as_array().unwrap().iter().map(|s| s["bytes"].as_u64().unwrap()).sum::<u64>());
        std::fs::remove_dir_all(out).ok();
    }
    // This tiny model is mostly token embedding and linear weights, like ViT-B/32.
    assert!(sizes[1] * 100 <= sizes[0] * 32, "q8 {} vs f32 {}", sizes[1], sizes[0]);
    assert!(sizes[2] * 100 <= sizes[0] * 17, "q4 {} vs f32 {}", sizes[2], sizes[0]);
}

/// Converts once, then damages a copy in one way per case and checks the error.
#[test]
fn damaged_or_mismatched_converted_models_are_refused() {
    let model = golden().join("models/tiny-gelu-eos49407");
    let good = scratch("good");
    convert(&model, "q8", &good);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(good.join("manifest.json")).unwrap()).unwrap();
    let first_shard = manifest["shards"][0]["file"].as_str().unwrap().to_string();
    let big_shard = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["bytes"].as_u64().unwrap())
        .unwrap()["file"]
        .as_str()
        .unwrap()
        .to_string();

    let damage = |name: &str, f: &dyn Fn(&Path)| -> String {
        let dir = scratch(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&good).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        f(&dir);
        let (o, stderr) = run(tool().args(["embed", "--backend", "cpu", "--text", "x", "--model"]).arg(&dir));
        assert_eq!(o.status.code(), Some(2), "{name}: {stderr}");
        assert!(o.stdout.is_empty(), "{name}: nothing is embedded");
        std::fs::remove_dir_all(dir).ok();
        stderr
    };
    let edit_manifest = |dir: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
        f(&mut m);
        std::fs::write(dir.join("manifest.json"), serde_json::to_string(&m).unwrap()).unwrap();
    };

    let err = damage("flipped", &|dir| {
        let path = dir.join(&big_shard);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(path, bytes).unwrap();
    });
    assert!(err.contains(&big_shard) && err.contains("does not match the manifest") && err.contains("corrupted"), "{err}");

    let err = damage("truncated", &|dir| {
        let path = dir.join(&big_shard);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(path, &bytes[..bytes.len() - 100]).unwrap();
    });
    assert!(err.contains(&big_shard) && err.contains("truncated"), "{err}");

    let err = damage("missing-shard", &|dir| std::fs::remove_file(dir.join(&first_shard)).unwrap());
    assert!(err.contains(&first_shard) && err.contains("No such file"), "{err}");

    let err = damage("wrong-checksum", &|dir| {
        edit_manifest(dir, &|m| m["shards"][0]["sha256"] = "00".repeat(32).into());
    });
    assert!(err.contains(&first_shard) && err.contains("sha256"), "{err}");

    let err = damage("missing-tensor", &|dir| {
        edit_manifest(dir, &|m| {
            let tensors = m["tensors"].as_array_mut().unwrap();
            tensors.retain(|t| t["name"] != "text_model.final_layer_norm.weight");
        });
    });
    assert!(err.contains("missing tensor `text_model.final_layer_norm.weight`"), "{err}");

    let err = damage("wrong-shape", &|dir| {
        edit_manifest(dir, &|m| {
            for t in m["tensors"].as_array_mut().unwrap() {
                if t["name"] == "visual_projection.weight" {
                    t["shape"] = serde_json::json!([3, 5]);
                }
            }
        });
    });
    assert!(err.contains("visual_projection.weight") && err.contains("expected I8 [3, 5]"), "{err}");

    let err = damage("architecture", &|dir| edit_manifest(dir, &|m| m["architecture"] = "siglip".into()));
    assert!(err.contains("unsupported architecture") && err.contains("siglip"), "{err}");

    let err = damage("newer", &|dir| edit_manifest(dir, &|m| m["format_version"] = 2.into()));
    assert!(err.contains("format version 2 is newer than this build reads (1)"), "{err}");

    // inspect names the bad shard and exits 2.
    let dir = scratch("inspect-bad");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&good).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.join(&first_shard), b"not a shard").unwrap();
    let (o, _) = run(tool().arg("inspect").arg(&dir));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("BAD"));
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(good).ok();
}

#[test]
fn convert_refuses_a_checkpoint_missing_a_tensor_and_leaves_nothing() {
    let src = golden().join("models/tiny-gelu-eos49407");
    let broken = scratch("broken-src");
    std::fs::create_dir_all(&broken).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, broken.join(path.file_name().unwrap())).unwrap();
    }
    // Rewrite model.safetensors without one tensor.
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let raw = model_wasm::weights::read_safetensors_raw(&bytes, "model.safetensors").unwrap();
    let mut entries: Vec<_> = raw
        .into_iter()
        .filter(|(name, _)| name != "vision_model.post_layernorm.bias")
        .map(|(name, t)| (name, leak(t.dtype), t.shape, t.bytes.to_vec()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::write(broken.join("model.safetensors"), model_wasm::weights::write_safetensors_raw(&entries).0).unwrap();
    let out = scratch("broken-out");
    let (o, stderr) = run(tool().arg("convert").arg(&broken).arg("--out").arg(&out));
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing tensor `vision_model.post_layernorm.bias`"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&out).map(|d| d.collect()).unwrap_or_default();
    let left: Vec<std::io::Result<std::fs::DirEntry>> = left;
    assert!(left.is_empty(), "converted files left behind: {left:?}");
    std::fs::remove_dir_all(broken).ok();
    std::fs::remove_dir_all(out).ok();
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn verify_reports_fidelity_and_fails_below_thresholds() {
    let g = golden();
    let model = g.join("models/tiny-gelu-eos49407");
    let out = scratch("verify");
    convert(&model, "q4", &out);
    let verify = |extra: &[&str]| {
        run(tool()
            .arg("verify")
            .arg(&out)
            .arg("--against")
            .arg(&model)
            .arg("--images")
            .arg(g.join("images"))
            .args(["--text", "a photo of a cat", "--text", "lymphocytes"])
            .args(extra))
    };
    let (o, stderr) = verify(&["--min-image-cos", "0.9", "--min-text-cos", "0.9", "--min-agreement", "0.5"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("images: cosine to original min") && stdout.contains("zero-shot top-1 agreement"), "{stdout}");
    let (o, stderr) = verify(&["--min-image-cos", "1.01"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr.contains("below the thresholds"), "{stderr}");
    std::fs::remove_dir_all(out).ok();
}

#[test]
fn catalog_lists_models_and_their_dtypes() {
    let model = golden().join("models/tiny-gelu-eos49407");
    let root = scratch("catalog");
    for dtype in ["q8", "f32"] {
        let out = root.join("tiny").join(dtype);
        let (o, stderr) = run(tool()
            .arg("convert")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .args(["--dtype", dtype, "--name", "Tiny CLIP", "--domain", "pathology", "--license", "MIT"])
            .args(["--template", "an H&E image of {}."]));
        assert!(o.status.success(), "{stderr}");
    }
    convert(&model, "q4", &root.join("other"));
    let (o, stderr) = run(tool().arg("catalog").arg(&root));
    assert!(o.status.success(), "{stderr}");
    let catalog: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("catalog.json")).unwrap()).unwrap();
    let models = catalog["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{catalog}");
    let tiny = models.iter().find(|m| m["id"] == "tiny-clip").unwrap();
    assert_eq!(tiny["domain"], "pathology");
    assert_eq!(tiny["license"], "MIT");
    assert_eq!(tiny["templates"][0], "an H&E image of {}.");
    let variants = tiny["variants"].as_array().unwrap();
    assert_eq!((variants[0]["dtype"].as_str(), variants[0]["path"].as_str()), (Some("f32"), Some("tiny/f32")));
    assert_eq!(variants[1]["dtype"], "q8");
    assert!(variants[0]["bytes"].as_u64().unwrap() > 2 * variants[1]["bytes"].as_u64().unwrap());
    let other = models.iter().find(|m| m["id"] == "tiny-gelu-eos49407").unwrap();
    assert_eq!((other["domain"].as_str(), other["variants"][0]["path"].as_str()), (Some("general"), Some("other")));
    let (o, _) = run(tool().arg("catalog").arg(root.join("tiny/q8/nothing-here")));
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(root).ok();
}

/// `shape` drawn from N(mean, std²), seeded: the medium model below needs no torch.
fn normal(rng: &mut index::synthetic::Rng, shape: &[usize], std: f32, mean: f32) -> model_wasm::HostTensor {
    let n = shape.iter().product();
    model_wasm::HostTensor { shape: shape.to_vec(), data: (0..n).map(|_| mean + std * rng.normal()).collect() }
}

/// Writes a random CLIP checkpoint 256 wide, 4 layers per tower, with transformers' initialisation
/// (`CLIPPreTrainedModel._init_weights`, the init the full-size benchmark uses); LayerNorms and
/// biases are moved off identity and zero so that their precision is tested too.
fn medium_checkpoint(dir: &Path) {
    let (d, inter, layers, heads, patch, size, proj) = (256usize, 1024usize, 4usize, 4usize, 16usize, 64usize, 256usize);
    let src = golden().join("models/tiny-gelu-eos49407");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let tower = |extra: serde_json::Value| {
        let mut c = serde_json::json!({
            "hidden_act": "gelu", "hidden_size": d, "intermediate_size": inter, "layer_norm_eps": 1e-5,
            "num_attention_heads": heads, "num_hidden_layers": layers,
        });
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    let config = serde_json::json!({
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": proj,
        "text_config": tower(serde_json::json!({"vocab_size": 49408, "max_position_embeddings": 77,
            "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407})),
        "vision_config": tower(serde_json::json!({"image_size": size, "patch_size": patch, "num_channels": 3})),
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let pre = serde_json::json!({
        "crop_size": {"height": size, "width": size}, "do_center_crop": true, "do_convert_rgb": true,
        "do_normalize": true, "do_rescale": true, "do_resize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1.0 / 255.0,
        "size": {"shortest_edge": size},
    });
    std::fs::write(dir.join("preprocessor_config.json"), pre.to_string()).unwrap();

    let mut rng = index::synthetic::Rng::new(20261124);
    let mut t: Vec<(String, model_wasm::HostTensor)> = Vec::new();
    let (attn_std, out_std, fc_std) = ((d as f32).powf(-0.5) * ((2 * layers) as f32).powf(-0.5), (d as f32).powf(-0.5), ((2 * d) as f32).powf(-0.5));
    for tower in ["vision_model", "text_model"] {
        for l in 0..layers {
            let p = format!("{tower}.encoder.layers.{l}");
            for (name, o, i, std) in [
                ("self_attn.q_proj", d, d, attn_std),
                ("self_attn.k_proj", d, d, attn_std),
                ("self_attn.v_proj", d, d, attn_std),
                ("self_attn.out_proj", d, d, out_std),
                ("mlp.fc1", inter, d, fc_std),
                ("mlp.fc2", d, inter, attn_std),
            ] {
                t.push((format!("{p}.{name}.weight"), normal(&mut rng, &[o, i], std, 0.0)));
                t.push((format!("{p}.{name}.bias"), normal(&mut rng, &[o], 0.02, 0.0)));
            }
            for ln in ["layer_norm1", "layer_norm2"] {
                t.push((format!("{p}.{ln}.weight"), normal(&mut rng, &[d], 0.1, 1.0)));
                t.push((format!("{p}.{ln}.bias"), normal(&mut rng, &[d], 0.1, 0.0)));
            }
        }
    }
    let grid = (size / patch) * (size / patch);
    for (name, shape, std, mean) in [
        ("vision_model.embeddings.class_embedding", vec![d], (d as f32).powf(-0.5), 0.0),
        ("vision_model.embeddings.patch_embedding.weight", vec![d, 3, patch, patch], 0.02, 0.0),
        ("vision_model.embeddings.position_embedding.weight", vec![grid + 1, d], 0.02, 0.0),
        ("vision_model.pre_layrnorm.weight", vec![d], 0.1, 1.0),
        ("vision_model.pre_layrnorm.bias", vec![d], 0.1, 0.0),
        ("vision_model.post_layernorm.weight", vec![d], 0.1, 1.0),
        ("vision_model.post_layernorm.bias", vec![d], 0.1, 0.0),
        ("visual_projection.weight", vec![proj, d], (d as f32).powf(-0.5), 0.0),
        ("text_model.embeddings.token_embedding.weight", vec![49408, d], 0.02, 0.0),
        ("text_model.embeddings.position_embedding.weight", vec![77, d], 0.02, 0.0),
        ("text_model.final_layer_norm.weight", vec![d], 0.1, 1.0),
        ("text_model.final_layer_norm.bias", vec![d], 0.1, 0.0),
        ("text_projection.weight", vec![proj, d], (d as f32).powf(-0.5), 0.0),
    ] {
        t.push((name.to_string(), normal(&mut rng, &shape, std, mean)));
    }
    t.push(("logit_scale".into(), model_wasm::HostTensor { shape: vec![], data: vec![2.6592] }));
    let refs: Vec<(&str, &model_wasm::HostTensor)> = t.iter().map(|(n, t)| (n.as_str(), t)).collect();
    std::fs::write(dir.join("model.safetensors"), model_wasm::weights::write_safetensors(&refs)).unwrap();
}

/// Embeds the golden lossless images and texts with `model` (CPU backend).
fn embed_all(model: &Path) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let g = golden();
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(g.join("tiny-gelu-eos49407.json")).unwrap()).unwrap();
    let mut cmd = tool();
    cmd.args(["embed", "--backend", "cpu", "--model"]).arg(model);
    for e in gold["images"].as_array().unwrap().iter().filter(|e| e["exif"] == "apply" && e["lossy"] == false) {
        cmd.arg("--image").arg(g.join("images").join(e["file"].as_str().unwrap()));
    }
    for t in gold["texts"].as_array().unwrap() {
        cmd.arg("--text").arg(t["text"].as_str().unwrap());
    }
    let (o, stderr) = run(&mut cmd);
    assert!(o.status.success(), "embed {}: {stderr}", model.display());
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = |key: &str| json[key].as_array().unwrap().iter().map(|e| floats(&e["embedding"])).collect();
    (rows("images"), rows("texts"))
}

/// q4 reaches the 0.98 asked for on a model wide enough to have several quantization blocks per
/// row (the golden models are 16 and 32 wide: one block per row, see above): cosine to the
/// unconverted f32 checkpoint on every image and text, and q8 >= 0.995.
#[test]
fn q4_keeps_cosine_098_on_a_256_wide_model() {
    let dir = scratch("medium");
    let ckpt = dir.join("checkpoint");
    medium_checkpoint(&ckpt);
    let (ref_images, ref_texts) = embed_all(&ckpt);
    assert!(ref_images.len() >= 8 && ref_texts.len() >= 30);
    let mut report = Vec::new();
    for (dtype, min) in [("q8", 0.995), ("q4", 0.98)] {
        let out = dir.join(dtype);
        convert(&ckpt, dtype, &out);
        let (images, texts) = embed_all(&out);
        let min_of = |a: &[Vec<f64>], b: &[Vec<f64>]| a.iter().zip(b).map(|(x, y)| cosine(x, y)).fold(f64::INFINITY, f64::min);
        let (image, text) = (min_of(&images, &ref_images), min_of(&texts, &ref_texts));
        report.push(format!("256-wide {dtype}: min cosine to f32 images {image:.5}, texts {text:.5}"));
        assert!(image >= min && text >= min, "{dtype}: images {image}, texts {text} < {min}");
    }
    eprintln!("{}", report.join("\n"));
    std::fs::remove_dir_all(dir).ok();
}
