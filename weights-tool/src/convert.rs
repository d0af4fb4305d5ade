//! `convert`, `inspect` and `verify`: Hugging Face CLIP checkpoints to Obscura's converted form
//! (see `model_wasm::converted` for the format) and back-checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::ValueEnum;
use model_wasm::checkpoint::Dir;
use model_wasm::convert::{ConvertOptions, Converter, Fidelity, Probe, known_templates};
use model_wasm::converted::check_shard;
use model_wasm::{BackendChoice, Checkpoint, Clip, ClipConfig, Exif, Manifest, ModelCard};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    F32,
    F16,
    Q8,
    Q4,
}

impl From<Dtype> for model_wasm::convert::Dtype {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => Self::F32,
            Dtype::F16 => Self::F16,
            Dtype::Q8 => Self::Q8,
            Dtype::Q4 => Self::Q4,
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

/// A checkpoint directory of either layout (Hugging Face or OpenCLIP), read lazily.
pub fn read_checkpoint(dir: &std::path::Path, tokenizer: Option<&std::path::Path>) -> anyhow::Result<Checkpoint> {
    let tokenizer = tokenizer.map(|t| std::fs::read(t).with_context(|| format!("reading {}", t.display()))).transpose()?;
    Checkpoint::open(&Dir(dir.to_path_buf()), tokenizer.as_deref()).with_context(|| format!("reading checkpoint {}", dir.display()))
}

pub fn convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let dir = &args.checkpoint;
    let checkpoint = read_checkpoint(dir, args.tokenizer.as_deref())?;
    let source = args.source.clone().unwrap_or_else(|| {
        dir.canonicalize().unwrap_or(dir.clone()).file_name().map_or("checkpoint".into(), |n| n.to_string_lossy().into())
    });
    let card = ModelCard {
        name: args.name.clone().unwrap_or_default(),
        domain: args.domain.clone(),
        license: if args.license == "unknown" { checkpoint.license().unwrap_or(args.license.clone()) } else { args.license.clone() },
        templates: if args.templates.is_empty() { known_templates(&source) } else { args.templates.clone() },
    };
    let dtype: model_wasm::convert::Dtype = args.dtype.into();
    let options = ConvertOptions { dtype, shard_bytes: args.shard_mb.max(1) * 1_000_000, source, card };
    let mut converter = Converter::new(&checkpoint, options).with_context(|| format!("{} is not a convertible CLIP checkpoint", dir.display()))?;
    let (_, total) = converter.progress();
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(dtype.name());
    while converter.step().with_context(|| format!("converting {}", dir.display()))? {
        bar.set_position(converter.progress().0);
    }
    bar.finish_and_clear();
    let converted = converter.finish()?;

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut written = Vec::new();
    for (name, bytes) in converted.files() {
        let path = args.out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }

    // Load what was written, exactly as the app will: shard checksums, storage and every
    // tensor's shape against the architecture. On failure nothing converted is left behind.
    let check = pollster::block_on(async {
        let clip = Clip::load_dir(&args.out, BackendChoice::Cpu).await?;
        let after = Probe::of(&clip).await?;
        drop(clip);
        let before = model_wasm::convert::probe_checkpoint(&checkpoint).await?;
        Ok::<_, model_wasm::Error>(Fidelity::compare(&before, &after))
    });
    let fidelity = match check {
        Ok(f) => f,
        Err(err) => {
            for path in &written {
                let _ = std::fs::remove_file(path);
            }
            return Err(err).context(format!("{} is not a loadable CLIP checkpoint", dir.display()));
        }
    };

    if args.verbose {
        println!("{:<72} {:>16} {:>6} {:>10} {:>10} {:>10}", "tensor", "shape", "scheme", "bytes", "max |err|", "mean |err|");
        for e in &converted.report {
            println!(
                "{:<72} {:>16} {:>6} {:>10} {:>10.3e} {:>10.3e}",
                e.name,
                format!("{:?}", e.shape),
                e.scheme.name(),
                e.bytes,
                e.max_error,
                e.mean_error
            );
        }
    }
    let manifest = &converted.manifest;
    let total = manifest.total_bytes();
    let f32_bytes = manifest.parameters * 4;
    println!(
        "converted {} ({} parameters) to {} as {}: {} in {} shard(s), {:.1}% of f32, in {:.1} s",
        dir.display(),
        manifest.parameters,
        args.out.display(),
        dtype.name(),
        human(total),
        manifest.shards.len(),
        100.0 * total as f64 / f32_bytes as f64,
        started.elapsed().as_secs_f64()
    );
    println!(
        "fidelity on the bundled images and prompts: min cosine images {:.6}, texts {:.6}; zero-shot agreement {:.0}%{}",
        fidelity.image_min,
        fidelity.text_min,
        100.0 * fidelity.agreement,
        if fidelity.passes(dtype) { String::new() } else { format!(" (below the app's {} bound of {})", dtype.name(), dtype.min_cosine()) }
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
    let original = Clip::from_checkpoint(&read_checkpoint(&args.against, args.tokenizer.as_deref())?, BackendChoice::Cpu)
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

