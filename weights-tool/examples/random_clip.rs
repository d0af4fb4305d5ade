//! Writes a random CLIP checkpoint in the Hugging Face layout, with transformers' initialisation
//! (`CLIPPreTrainedModel._init_weights`), for benchmarks and tests that need a full-size model
//! without torch: `config.json`, `tokenizer.json` (the demo model's CLIP BPE), and the weights as
//! `model.safetensors`, `pytorch_model.bin` (a `torch.save` zip archive: pickle protocol 2 with
//! `_rebuild_tensor_v2` and one storage per tensor, as torch writes it) or both.
//!
//!   cargo run --release -p weights-tool --example random_clip -- OUT_DIR [vit-b32|w256|tiny] [safetensors|bin|both]

use std::io::Write;
use std::path::Path;

use model_wasm::HostTensor;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Irwin–Hall approximation of N(0, 1): fast and plenty for random weights.
    fn normal(&mut self) -> f32 {
        let mut s = 0.0;
        for _ in 0..4 {
            let u = self.next();
            s += (u & 0xFFFF_FFFF) as f32 / 4294967296.0 + (u >> 32) as f32 / 4294967296.0;
        }
        (s - 4.0) * (1.5f32).sqrt()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = Path::new(args.first().map(String::as_str).unwrap_or("random-clip"));
    let size = args.get(1).map(String::as_str).unwrap_or("vit-b32");
    let format = args.get(2).map(String::as_str).unwrap_or("both");
    // (vision width, layers, heads, patch, image, text width, layers, heads, projection)
    let (vd, vl, vh, patch, image, td, tl, th, proj) = match size {
        "vit-b32" => (768, 12, 12, 32, 224, 512, 12, 8, 512),
        "w256" => (256, 4, 4, 16, 64, 256, 4, 4, 256),
        "tiny" => (64, 2, 4, 16, 32, 64, 2, 4, 32),
        other => panic!("unknown size {other}: vit-b32, w256 or tiny"),
    };
    std::fs::create_dir_all(out).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(root.join("public/models/demo/tokenizer.json"), out.join("tokenizer.json")).unwrap();
    let config = serde_json::json!({
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": proj, "logit_scale_init_value": 2.6592,
        "text_config": {"hidden_act": "quick_gelu", "hidden_size": td, "intermediate_size": 4 * td, "num_attention_heads": th,
            "num_hidden_layers": tl, "vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": 49406, "eos_token_id": 49407,
            "layer_norm_eps": 1e-5},
        "vision_config": {"hidden_act": "quick_gelu", "hidden_size": vd, "intermediate_size": 4 * vd, "num_attention_heads": vh,
            "num_hidden_layers": vl, "image_size": image, "patch_size": patch, "num_channels": 3, "layer_norm_eps": 1e-5},
    });
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let mut rng = Rng(20261202);
    let mut t: Vec<(String, HostTensor)> = Vec::new();
    let mut normal = |shape: &[usize], std: f32, mean: f32| {
        let n = shape.iter().product();
        HostTensor { shape: shape.to_vec(), data: (0..n).map(|_| mean + std * rng.normal()).collect() }
    };
    for (tower, d, layers) in [("vision_model", vd, vl), ("text_model", td, tl)] {
        let (attn, out_std, fc) = ((d as f32).powf(-0.5) * ((2 * layers) as f32).powf(-0.5), (d as f32).powf(-0.5), ((2 * d) as f32).powf(-0.5));
        for l in 0..layers {
            let p = format!("{tower}.encoder.layers.{l}");
            for (name, o, i, std) in [
                ("self_attn.q_proj", d, d, attn),
                ("self_attn.k_proj", d, d, attn),
                ("self_attn.v_proj", d, d, attn),
                ("self_attn.out_proj", d, d, out_std),
                ("mlp.fc1", 4 * d, d, fc),
                ("mlp.fc2", d, 4 * d, attn),
            ] {
                t.push((format!("{p}.{name}.weight"), normal(&[o, i], std, 0.0)));
                t.push((format!("{p}.{name}.bias"), normal(&[o], 0.02, 0.0)));
            }
            for ln in ["layer_norm1", "layer_norm2"] {
                t.push((format!("{p}.{ln}.weight"), normal(&[d], 0.1, 1.0)));
                t.push((format!("{p}.{ln}.bias"), normal(&[d], 0.1, 0.0)));
            }
        }
    }
    let grid = (image / patch) * (image / patch);
    for (name, shape, std, mean) in [
        ("vision_model.embeddings.class_embedding", vec![vd], (vd as f32).powf(-0.5), 0.0),
        ("vision_model.embeddings.patch_embedding.weight", vec![vd, 3, patch, patch], 0.02, 0.0),
        ("vision_model.embeddings.position_embedding.weight", vec![grid + 1, vd], 0.02, 0.0),
        ("vision_model.pre_layrnorm.weight", vec![vd], 0.1, 1.0),
        ("vision_model.pre_layrnorm.bias", vec![vd], 0.1, 0.0),
        ("vision_model.post_layernorm.weight", vec![vd], 0.1, 1.0),
        ("vision_model.post_layernorm.bias", vec![vd], 0.1, 0.0),
        ("visual_projection.weight", vec![proj, vd], (vd as f32).powf(-0.5), 0.0),
        ("text_model.embeddings.token_embedding.weight", vec![49408, td], 0.02, 0.0),
        ("text_model.embeddings.position_embedding.weight", vec![77, td], 0.02, 0.0),
        ("text_model.final_layer_norm.weight", vec![td], 0.1, 1.0),
        ("text_model.final_layer_norm.bias", vec![td], 0.1, 0.0),
        ("text_projection.weight", vec![proj, td], (td as f32).powf(-0.5), 0.0),
    ] {
        t.push((name.to_string(), normal(&shape, std, mean)));
    }
    t.push(("logit_scale".into(), HostTensor { shape: vec![], data: vec![2.6592] }));
    if format == "safetensors" || format == "both" {
        let refs: Vec<(&str, &HostTensor)> = t.iter().map(|(n, t)| (n.as_str(), t)).collect();
        std::fs::write(out.join("model.safetensors"), model_wasm::weights::write_safetensors(&refs)).unwrap();
    }
    if format == "bin" || format == "both" {
        write_torch_zip(&out.join("pytorch_model.bin"), &t);
    }
    let params: usize = t.iter().map(|(_, t)| t.data.len()).sum();
    println!("wrote a random {size} CLIP checkpoint ({params} parameters) to {}", out.display());
}

/// A `torch.save` archive of a state dict of f32 tensors.
fn write_torch_zip(path: &Path, tensors: &[(String, HostTensor)]) {
    fn unicode(p: &mut Vec<u8>, s: &str) {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    }
    fn int(p: &mut Vec<u8>, v: usize) {
        p.push(b'J');
        p.extend((v as i32).to_le_bytes());
    }
    fn ints(p: &mut Vec<u8>, vs: &[usize]) {
        p.push(b'(');
        for &v in vs {
            int(p, v);
        }
        p.push(b't');
    }
    let mut p = vec![0x80, 2];
    p.extend(b"ccollections\nOrderedDict\n)R(");
    for (k, (name, t)) in tensors.iter().enumerate() {
        unicode(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        // persistent id ('storage', torch.FloatStorage, key, 'cpu', numel)
        p.push(b'(');
        unicode(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        unicode(&mut p, &k.to_string());
        unicode(&mut p, "cpu");
        int(&mut p, t.data.len());
        p.extend(b"tQ");
        int(&mut p, 0);
        ints(&mut p, &t.shape);
        let mut strides = vec![1usize; t.shape.len()];
        for d in (0..t.shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * t.shape[d + 1];
        }
        ints(&mut p, &strides);
        p.push(0x89);
        p.extend(b"ccollections\nOrderedDict\n)R");
        p.extend(b"tR");
    }
    p.extend(b"u.");
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&p).unwrap();
    for (k, (_, t)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{k}"), opts).unwrap();
        let bytes: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("archive/version", opts).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}
