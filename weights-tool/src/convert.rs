//! `convert`, `inspect` and `verify`: Hugging Face CLIP checkpoints to Obscura's converted form
//! (see `model_wasm::converted` for the format) and back-checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::ValueEnum;
use model_wasm::converted::{
    MANIFEST_FORMAT, MANIFEST_VERSION, Part, ShardEntry, TensorEntry, check_shard, matrix_dims, quantize_q4,
    quantize_q8, sha256_hex,
};
use model_wasm::weights::write_safetensors_raw;
use model_wasm::{BackendChoice, Clip, ClipConfig, Exif, HostTensor, Manifest, ModelCard, Scheme, Weights};

/// q4 block length: 32 values share one f16 scale (4.5 bits per weight).
pub const Q4_BLOCK: usize = 32;

/// Text-tower tensors that a `q4` model keeps in q8: every layer's attention value and output
/// projections, the whole first layer, and the text projection (3.5 MB more for ViT-B/32, as
/// llama.cpp's Q4_K_M keeps `attn_v` in more bits). Chosen by measurement on ViT-B/32 with random
/// weights (bench/q4_sensitivity.py: min / mean text cosine to fp32): all q4 at blocks of 16
/// 0.974 / 0.980; q8 `v_proj` 0.980 / 0.985, `out_proj` 0.981 / 0.985, layer 0 0.981 / 0.986,
/// `text_projection` 0.978 / 0.982; `q_proj`, `k_proj`, the token embedding, later layers
/// ≤ 0.001 each. The vision tower tolerates q4 better (0.993 min at blocks of 16, 0.991 at 32),
/// so blocks of 32 there pay for the q8 tensors and the model stays under 16% of fp32.
fn q4_keeps_q8(name: &str) -> bool {
    name == "text_projection.weight"
        || name.starts_with("text_model.encoder.layers.0.")
        || (name.starts_with("text_model.")
            && (name.ends_with(".self_attn.v_proj.weight") || name.ends_with(".self_attn.out_proj.weight")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    F32,
    F16,
    Q8,
    Q4,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        }
    }
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Checkpoint directory: Hugging Face CLIP (config.json, model.safetensors or
    /// pytorch_model.bin, tokenizer.json, preprocessor_config.json) or OpenCLIP
    /// (open_clip_config.json, open_clip_pytorch_model.bin or open_clip_model.safetensors).
    checkpoint: PathBuf,
    /// CLIP tokenizer.json for an OpenCLIP checkpoint that has none of its own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Output directory (created; existing converted files in it are replaced).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = Dtype::Q8)]
    dtype: Dtype,
    /// Target shard size in MB (a tensor larger than this gets a shard of its own).
    #[arg(long, default_value_t = 32)]
    shard_mb: usize,
    /// Where the weights came from, for the manifest (default: the checkpoint directory's name).
    #[arg(long)]
    source: Option<String>,
    /// Display name for the app's model picker (default: the source).
    #[arg(long)]
    name: Option<String>,
    /// Domain shown in the model picker: general, pathology, radiology, …
    #[arg(long, default_value = "general")]
    domain: String,
    /// Licence of the weights (SPDX id or a short statement).
    #[arg(long, default_value = "unknown")]
    license: String,
    /// A zero-shot prompt template, `{}` standing for the label (repeatable; default
    /// "a photo of {}.").
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Print every tensor's scheme, size and quantization error.
    #[arg(long)]
    verbose: bool,
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

/// A tensor encoded for storage: `(key, dtype, shape, bytes)` entries (data, then scales).
struct Encoded {
    name: String,
    shape: Vec<usize>,
    scheme: Scheme,
    entries: Vec<(String, &'static str, Vec<usize>, Vec<u8>)>,
    /// Max and mean |w − ŵ|.
    error: (f32, f32),
}

fn encode(name: &str, t: &HostTensor, scheme: Scheme) -> Encoded {
    let (rows, cols) = matrix_dims(&t.shape);
    let le32 = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (entries, back): (Vec<_>, Vec<f32>) = match scheme {
        Scheme::F32 => (vec![(name.to_string(), "F32", t.shape.clone(), le32(&t.data))], t.data.clone()),
        Scheme::F16 => {
            let h: Vec<half::f16> = t.data.iter().map(|&x| half::f16::from_f32(x)).collect();
            let bytes = h.iter().flat_map(|x| x.to_le_bytes()).collect();
            (vec![(name.to_string(), "F16", t.shape.clone(), bytes)], h.iter().map(|x| x.to_f32()).collect())
        }
        Scheme::Q8 => {
            let (codes, scales) = quantize_q8(&t.data, cols);
            let bytes: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
            let back = model_wasm::converted::dequantize_q8(&bytes, &scales, cols);
            let entries = vec![
                (name.to_string(), "I8", vec![rows, cols], bytes),
                (format!("{name}.scale"), "F32", vec![rows], le32(&scales)),
            ];
            (entries, back)
        }
        Scheme::Q4 { block } => {
            let (codes, scales) = quantize_q4(&t.data, cols, block);
            let back = model_wasm::converted::dequantize_q4(&codes, &scales, cols, block);
            let blocks = scales.len() / rows.max(1);
            let entries = vec![
                (name.to_string(), "U8", vec![rows, codes.len() / rows.max(1)], codes),
                (
                    format!("{name}.scale"),
                    "F16",
                    vec![rows, blocks],
                    scales.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            ];
            (entries, back)
        }
    };
    let diffs = t.data.iter().zip(&back).map(|(a, b)| (a - b).abs());
    let (max, sum) = diffs.fold((0.0f32, 0.0f64), |(m, s), d| (m.max(d), s + d as f64));
    let mean = (sum / t.data.len().max(1) as f64) as f32;
    Encoded { name: name.to_string(), shape: t.shape.clone(), scheme, entries, error: (max, mean) }
}

fn bytes_of(e: &Encoded) -> usize {
    e.entries.iter().map(|x| x.3.len()).sum()
}

/// A checkpoint directory of either layout, as Hugging Face-shaped files.
pub fn read_checkpoint(dir: &std::path::Path, tokenizer: Option<&std::path::Path>) -> anyhow::Result<model_wasm::ModelFiles> {
    if crate::openclip::is_open_clip(dir) {
        crate::openclip::read_dir(dir, tokenizer).with_context(|| format!("reading OpenCLIP checkpoint {}", dir.display()))
    } else {
        model_wasm::read_model_dir(dir).with_context(|| format!("reading checkpoint {}", dir.display()))
    }
}

pub fn convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let dir = &args.checkpoint;
    let files = read_checkpoint(dir, args.tokenizer.as_deref())?;
    let config_value: serde_json::Value =
        serde_json::from_str(&files.config_json).context("config.json is not valid JSON")?;
    ClipConfig::from_hf_json(&files.config_json, "config.json")?;
    let weights = Weights::from_bytes(&files.weights, &files.weights_name)?;
    let mut names: Vec<String> = weights.names().map(str::to_string).collect();
    names.sort();

    let bar = indicatif::ProgressBar::new(names.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} tensors ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(args.dtype.name());
    let mut encoded = Vec::with_capacity(names.len());
    for name in &names {
        let t = weights.get(name).expect("listed");
        encoded.push(encode(name, t, scheme_for(name, &t.shape, args.dtype)));
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(weights);

    // Group tensors into shards of about `shard_mb`, in name order.
    let limit = args.shard_mb.max(1) * 1_000_000;
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0;
    for (i, e) in encoded.iter().enumerate() {
        let b = bytes_of(e);
        if size > 0 && size + b > limit {
            groups.push(Vec::new());
            size = 0;
        }
        groups.last_mut().expect("non-empty").push(i);
        size += b;
    }

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut tensors = Vec::with_capacity(encoded.len());
    let mut shards = Vec::with_capacity(groups.len());
    let mut written = Vec::new();
    for (s, group) in groups.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, groups.len());
        let entries: Vec<_> = group.iter().flat_map(|&i| encoded[i].entries.iter().cloned()).collect();
        let (bytes, ranges) = write_safetensors_raw(&entries);
        let mut ranges = ranges.into_iter().zip(&entries);
        for &i in group {
            let e = &encoded[i];
            let mut part = || {
                let ((start, end), entry) = ranges.next().expect("one range per entry");
                Part { key: entry.0.clone(), start: start as u64, end: end as u64 }
            };
            let data = part();
            let scale = (e.entries.len() == 2).then(part);
            tensors.push(TensorEntry { name: e.name.clone(), shape: e.shape.clone(), scheme: e.scheme, shard: s, data, scale });
        }
        shards.push(ShardEntry { file: file.clone(), bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) });
        let path = args.out.join(&file);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    let json = |s: &Option<String>| s.as_deref().and_then(|s| serde_json::from_str(s).ok());
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        format_version: MANIFEST_VERSION,
        architecture: "clip".into(),
        source: args.source.clone().unwrap_or_else(|| {
            dir.canonicalize().unwrap_or(dir.clone()).file_name().map_or("checkpoint".into(), |n| n.to_string_lossy().into())
        }),
        dtype: args.dtype.name().into(),
        config: config_value,
        preprocessor: json(&files.preprocessor_json),
        tokenizer: "tokenizer.json".into(),
        tokenizer_config: json(&files.tokenizer_config_json),
        parameters: encoded.iter().map(|e| e.shape.iter().product::<usize>() as u64).sum(),
        card: ModelCard {
            name: args.name.clone().unwrap_or_default(),
            domain: args.domain.clone(),
            license: args.license.clone(),
            templates: if args.templates.is_empty() { ModelCard::default().templates } else { args.templates.clone() },
        },
        tensors,
        shards,
    };
    let manifest_path = args.out.join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&manifest)?)?;
    std::fs::write(args.out.join("tokenizer.json"), &files.tokenizer_json)?;
    written.push(manifest_path);
    written.push(args.out.join("tokenizer.json"));

    // Load what was written, exactly as the app will: shard checksums, storage and every
    // tensor's shape against the architecture. On failure nothing converted is left behind.
    let check = pollster::block_on(Clip::load_dir(&args.out, BackendChoice::Cpu));
    if let Err(err) = check {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
        return Err(err).context(format!("{} is not a loadable CLIP checkpoint", dir.display()));
    }

    if args.verbose {
        println!("{:<72} {:>16} {:>6} {:>10} {:>10} {:>10}", "tensor", "shape", "scheme", "bytes", "max |err|", "mean |err|");
        for e in &encoded {
            println!(
                "{:<72} {:>16} {:>6} {:>10} {:>10.3e} {:>10.3e}",
                e.name,
                format!("{:?}", e.shape),
                e.scheme.name(),
                bytes_of(e),
                e.error.0,
                e.error.1
            );
        }
    }
    let total = manifest.total_bytes();
    let f32_bytes = manifest.parameters * 4;
    println!(
        "converted {} ({} parameters) to {} as {}: {} in {} shard(s), {:.1}% of f32, in {:.1} s",
        dir.display(),
        manifest.parameters,
        args.out.display(),
        args.dtype.name(),
        human(total),
        manifest.shards.len(),
        100.0 * total as f64 / f32_bytes as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn human(bytes: u64) -> String {
    if bytes >= 1_000_000 { format!("{:.1} MB", bytes as f64 / 1e6) } else { format!("{:.1} kB", bytes as f64 / 1e3) }
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A converted model directory.
    dir: PathBuf,
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let path = args.dir.join("manifest.json");
    let json = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest = Manifest::from_json(&json)?;
    let config = ClipConfig::from_hf_json(&manifest.config.to_string(), "manifest.json config")?;
    println!("architecture  {} (vision {}-d x {} layers, text {}-d x {} layers, projection {})", manifest.architecture,
        config.vision.hidden_size, config.vision.num_hidden_layers, config.text.hidden_size,
        config.text.num_hidden_layers, config.projection_dim);
    println!("source        {}", manifest.source);
    println!("dtype         {}", manifest.dtype);
    println!("parameters    {}", manifest.parameters);
    let mut per_scheme: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for t in &manifest.tensors {
        let bytes = (t.data.end - t.data.start) + t.scale.as_ref().map_or(0, |s| s.end - s.start);
        let e = per_scheme.entry(t.scheme.name()).or_default();
        e.0 += t.shape.iter().product::<usize>() as u64;
        e.1 += bytes;
    }
    for (scheme, (params, bytes)) in &per_scheme {
        println!("  {scheme:<4} {params:>12} parameters {:>12}", human(*bytes));
    }
    let mut bad = 0;
    println!("shards        {} ({} in all)", manifest.shards.len(), human(manifest.total_bytes()));
    for shard in &manifest.shards {
        let status = match std::fs::read(args.dir.join(&shard.file)) {
            Err(e) => format!("MISSING ({e})"),
            Ok(bytes) => match check_shard(shard, &bytes) {
                Ok(()) => "sha256 ok".to_string(),
                Err(e) => format!("BAD: {e}"),
            },
        };
        bad += usize::from(status != "sha256 ok");
        println!("  {:<36} {:>10}  {status}", shard.file, human(shard.bytes));
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// A converted model directory.
    converted: PathBuf,
    /// The checkpoint it was converted from (Hugging Face or OpenCLIP).
    #[arg(long)]
    against: PathBuf,
    /// CLIP tokenizer.json for an OpenCLIP checkpoint that has none of its own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Images to embed with both (a directory or files; repeatable).
    #[arg(long = "images", required = true)]
    images: Vec<PathBuf>,
    /// Texts to embed with both (repeatable); with two or more, zero-shot top-1 agreement too.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Fail if any image embedding's cosine to the original is below this.
    #[arg(long, default_value_t = 0.99)]
    min_image_cos: f64,
    /// Fail if any text embedding's cosine to the original is below this.
    #[arg(long, default_value_t = 0.99)]
    min_text_cos: f64,
    /// Fail if zero-shot top-1 agreement is below this fraction.
    #[arg(long, default_value_t = 0.9)]
    min_agreement: f64,
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let converted = Clip::load_dir(&args.converted, BackendChoice::Cpu)
        .await
        .with_context(|| format!("loading converted model {}", args.converted.display()))?;
    let original = Clip::from_files(read_checkpoint(&args.against, args.tokenizer.as_deref())?, BackendChoice::Cpu)
        .await
        .with_context(|| format!("loading checkpoint {}", args.against.display()))?;
    let mut names = Vec::new();
    let (mut a_img, mut b_img) = (Vec::new(), Vec::new());
    for path in crate::expand(&args.images)? {
        let name = path.display().to_string();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {name}"))?;
        let (pa, pb) = match (converted.pixels(&bytes, &name, Exif::Apply), original.pixels(&bytes, &name, Exif::Apply)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("weights-tool: skipped {e}");
                continue;
            }
        };
        a_img.extend(converted.embed_images(&[pa]).await?);
        b_img.extend(original.embed_images(&[pb]).await?);
        names.push(name);
    }
    if names.is_empty() {
        bail!("no image could be read from {:?}", args.images);
    }
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let (_, a_txt) = converted.embed_texts(&texts).await?;
    let (_, b_txt) = original.embed_texts(&texts).await?;
    let cos = |a: &[f32], b: &[f32]| model_wasm::dot(a, b) as f64;
    let image_cos: Vec<f64> = a_img.iter().zip(&b_img).map(|(a, b)| cos(a, b)).collect();
    let text_cos: Vec<f64> = a_txt.iter().zip(&b_txt).map(|(a, b)| cos(a, b)).collect();
    for (name, c) in names.iter().zip(&image_cos) {
        println!("image {c:.6}  {name}");
    }
    for (text, c) in texts.iter().zip(&text_cos) {
        println!("text  {c:.6}  {text}");
    }
    let stats = |v: &[f64]| (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().sum::<f64>() / v.len().max(1) as f64);
    let (img_min, img_mean) = stats(&image_cos);
    println!("images: cosine to original min {img_min:.6}, mean {img_mean:.6} over {}", image_cos.len());
    let mut failed = img_min < args.min_image_cos;
    if !text_cos.is_empty() {
        let (txt_min, txt_mean) = stats(&text_cos);
        println!("texts: cosine to original min {txt_min:.6}, mean {txt_mean:.6} over {}", text_cos.len());
        failed |= txt_min < args.min_text_cos;
    }
    if texts.len() >= 2 {
        let top1 = |img: &[f32], txt: &[Vec<f32>]| {
            (0..txt.len()).max_by(|&i, &j| cos(img, &txt[i]).total_cmp(&cos(img, &txt[j]))).expect("texts")
        };
        let agree = a_img.iter().zip(&b_img).filter(|(a, b)| top1(a, &a_txt) == top1(b, &b_txt)).count();
        let agreement = agree as f64 / a_img.len() as f64;
        println!("zero-shot top-1 agreement {agree}/{} ({:.1}%)", a_img.len(), 100.0 * agreement);
        failed |= agreement < args.min_agreement;
    }
    if failed {
        eprintln!("weights-tool: below the thresholds (image {}, text {}, agreement {})", args.min_image_cos, args.min_text_cos, args.min_agreement);
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct CatalogArgs {
    /// Directory holding converted models (searched three levels deep for manifest.json);
    /// catalog.json is written here, with paths relative to it.
    dir: PathBuf,
}

/// One model of the catalog, with the dtypes it is available in.
#[derive(serde::Serialize)]
struct CatalogModel {
    id: String,
    name: String,
    source: String,
    domain: String,
    license: String,
    templates: Vec<String>,
    variants: Vec<CatalogVariant>,
}

#[derive(serde::Serialize)]
struct CatalogVariant {
    dtype: String,
    bytes: u64,
    path: String,
}

pub fn catalog(args: CatalogArgs) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    find_manifests(&args.dir, 0, &mut found)?;
    found.sort();
    let mut models: BTreeMap<String, CatalogModel> = BTreeMap::new();
    for path in &found {
        let json = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let manifest = Manifest::from_json(&json).with_context(|| format!("{}", path.display()))?;
        let dir = path.parent().expect("a file's directory");
        let rel = dir.strip_prefix(&args.dir).unwrap_or(dir);
        let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        let card = manifest.card.clone();
        let name = if card.name.is_empty() { manifest.source.clone() } else { card.name.clone() };
        let id: String = name
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let model = models.entry(id.clone()).or_insert_with(|| CatalogModel {
            id,
            name,
            source: manifest.source.clone(),
            domain: card.domain,
            license: card.license,
            templates: card.templates,
            variants: Vec::new(),
        });
        model.variants.push(CatalogVariant { dtype: manifest.dtype.clone(), bytes: manifest.total_bytes(), path: rel });
    }
    if models.is_empty() {
        bail!("no converted model (manifest.json) under {}", args.dir.display());
    }
    let order = |d: &str| ["f32", "f16", "q8", "q4"].iter().position(|x| *x == d).unwrap_or(9);
    let models: Vec<CatalogModel> = models
        .into_values()
        .map(|mut m| {
            m.variants.sort_by_key(|v| order(&v.dtype));
            m
        })
        .collect();
    let out = args.dir.join("catalog.json");
    let json = serde_json::json!({ "format_version": 1, "models": models });
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {} ({} models, {} variants)", out.display(), models.len(), found.len());
    Ok(ExitCode::SUCCESS)
}

fn find_manifests(dir: &std::path::Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let manifest = dir.join("manifest.json");
    if manifest.is_file() {
        out.push(manifest);
        return Ok(());
    }
    if depth >= 3 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            find_manifests(&path, depth + 1, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::q4_keeps_q8;

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
}
