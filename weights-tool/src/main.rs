//! `weights-tool`: Obscura's native CLI for models.
//!
//! - `embed`: embed images and texts with a Hugging Face CLIP checkpoint or a converted model,
//!   exactly as the browser does (same crate, same preprocessing), and print JSON.
//! - `convert`: checkpoint → manifest + sharded, checksummed f32/f16/q8/q4 weights.
//! - `inspect`: what a converted directory holds, and whether its checksums hold.
//! - `verify`: converted vs original embeddings (cosine, zero-shot agreement), with thresholds.
//! - `catalog`: `catalog.json` for the app's model picker, from converted directories.

mod convert;
mod eval;
mod fetch;
mod slide;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use model_wasm::{BackendChoice, Clip, Exif, Pixels};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "weights-tool", version, about = "Obscura's model tool: convert, inspect, verify and embed")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed images and texts; print L2-normalised embeddings and logits as JSON.
    Embed(EmbedArgs),
    /// Convert a Hugging Face CLIP checkpoint into a manifest and sharded, checksummed,
    /// optionally quantized weights.
    Convert(convert::ConvertArgs),
    /// Describe a converted model directory and check its shards' checksums.
    Inspect(convert::InspectArgs),
    /// Compare a converted model's embeddings with its original checkpoint's.
    Verify(convert::VerifyArgs),
    /// Download a CLIP checkpoint (Hugging Face or OpenCLIP layout) from the Hugging Face Hub.
    Fetch(fetch::FetchArgs),
    /// Write catalog.json (the app's model picker) from the converted models under a directory.
    Catalog(convert::CatalogArgs),
    /// Evaluate a model on a labelled set (class folders, or images and a file,label CSV):
    /// zero-shot metrics, confusion matrix, retrieval and optionally a linear probe, as JSON.
    Eval(eval::EvalArgs),
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// Model directory: a Hugging Face checkpoint (config.json, model.safetensors or
    /// pytorch_model.bin, tokenizer.json, preprocessor_config.json) or a converted model
    /// (manifest.json).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Apply the EXIF orientation (what a viewer shows) or use the stored pixel grid.
    #[arg(long, value_enum, default_value_t = ExifArg::Apply)]
    exif: ExifArg,
    /// An image file, or a directory whose image files are all embedded. Repeatable.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A text to embed. Repeatable.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// A whole-slide image (SVS, pyramidal TIFF; a directory for a DICOM series): tiled at
    /// `--mpp` over its tissue and every patch embedded. Repeatable.
    #[arg(long = "slide")]
    slides: Vec<PathBuf>,
    /// Microns per pixel of the slide patches (0.5 ≈ 20x).
    #[arg(long, default_value_t = 0.5)]
    mpp: f64,
    /// Fraction of a patch shared with its neighbours (0 ≤ overlap < 0.95).
    #[arg(long, default_value_t = 0.0)]
    overlap: f64,
    /// Keep a patch when at least this fraction of it is tissue.
    #[arg(long, default_value_t = 0.5)]
    min_tissue: f64,
    /// The slide's own microns per pixel, for files that do not say.
    #[arg(long)]
    slide_mpp: Option<f64>,
    /// Write each image's preprocessed [3,S,S] float32 pixels as <file stem>.npy here, and each
    /// slide patch's RGB crop as <slide stem>_<x>_<y>.png.
    #[arg(long)]
    pixels_out: Option<PathBuf>,
    /// Also write the embedded slide patches as an Obscura collection file that the app imports
    /// ("Import collection"), with the model's manifest (a converted model only).
    #[arg(long)]
    collection_out: Option<PathBuf>,
    /// `json` (default) or `table`: cosine similarity of every image to every text.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// The GPU if there is one (f16 compute where it has shader-f16), else the CPU.
    Auto,
    Cpu,
    /// The GPU, in f16 where it has shader-f16.
    Wgpu,
    /// The GPU, always in f32.
    WgpuF32,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExifArg {
    Apply,
    Ignore,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Json,
    Table,
}

#[derive(Serialize)]
struct EmbedOutput {
    model: String,
    backend: String,
    /// `f32` or `f16`: the float type the encoder computed in.
    precision: String,
    images: Vec<ImageOut>,
    texts: Vec<TextOut>,
    logits_per_image: Vec<Vec<f32>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    slides: Vec<slide::SlideOut>,
}

#[derive(Serialize)]
struct ImageOut {
    path: String,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct TextOut {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("weights-tool: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Embed(args) => pollster::block_on(embed(args)),
        Command::Convert(args) => convert::convert(args),
        Command::Inspect(args) => convert::inspect(args),
        Command::Verify(args) => pollster::block_on(convert::verify(args)),
        Command::Catalog(args) => convert::catalog(args),
        Command::Fetch(args) => fetch::fetch(args),
        Command::Eval(args) => pollster::block_on(eval::eval(args)),
    }
}

/// A converted model directory (manifest.json) or a Hugging Face checkpoint, on `backend`.
async fn load_model(dir: &Path, backend: Backend) -> anyhow::Result<Clip> {
    let choice = match backend {
        Backend::Auto => BackendChoice::Auto,
        Backend::Cpu => BackendChoice::Cpu,
        Backend::Wgpu => BackendChoice::Wgpu,
        Backend::WgpuF32 => BackendChoice::WgpuF32,
    };
    let clip = if dir.join("manifest.json").exists() {
        Clip::load_dir(dir, choice).await
    } else {
        Clip::from_checkpoint(&convert::read_checkpoint(dir, None)?, choice).await
    }
    .with_context(|| format!("loading model {}", dir.display()))?;
    if let Some(reason) = &clip.backend().fallback_reason {
        eprintln!("weights-tool: running on the CPU: {reason}");
    }
    Ok(clip)
}

use index::lab::labels::IMAGE_EXTENSIONS;

/// Expand directories into their image files (sorted, not recursive).
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

async fn embed(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    if args.images.is_empty() && args.texts.is_empty() && args.slides.is_empty() {
        bail!("nothing to embed: give at least one --image, --slide or --text");
    }
    let exif = match args.exif {
        ExifArg::Apply => Exif::Apply,
        ExifArg::Ignore => Exif::Ignore,
    };
    let clip = load_model(&args.model, args.backend).await?;
    if let Some(dir) = &args.pixels_out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    // Decode everything first: a bad image is reported and skipped, the rest are embedded.
    let mut failures = 0usize;
    let mut slide_failures = 0usize;
    let mut ok: Vec<(String, Pixels)> = Vec::new();
    for path in expand(&args.images)? {
        let name = path.display().to_string();
        let pixels = std::fs::read(&path)
            .with_context(|| format!("reading {name}"))
            .and_then(|bytes| Ok(clip.pixels(&bytes, &name, exif)?));
        match pixels {
            Ok(p) => {
                if let Some(dir) = &args.pixels_out {
                    write_npy(&dir.join(npy_name(&path)), &p)?;
                }
                ok.push((name, p));
            }
            Err(e) => {
                failures += 1;
                eprintln!("weights-tool: skipped {e:#}");
            }
        }
    }
    let mut images = Vec::with_capacity(ok.len());
    for chunk in ok.chunks(args.batch.max(1)) {
        let pixels: Vec<Pixels> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let emb = clip.embed_images(&pixels).await?;
        images.extend(chunk.iter().zip(emb).map(|((path, _), embedding)| ImageOut { path: path.clone(), embedding }));
    }
    let options = model_wasm::slide::TilingOptions {
        target_mpp: args.mpp,
        patch: clip.input_size(),
        overlap: args.overlap,
        min_tissue: args.min_tissue,
        mpp_override: args.slide_mpp,
    };
    let manifest = args.model.join("manifest.json");
    if args.collection_out.is_some() && (!manifest.exists() || args.slides.is_empty()) {
        bail!("--collection-out needs --slide and a converted model (manifest.json): the app loads converted models; run `weights-tool convert` first");
    }
    let mut items = args.collection_out.as_ref().map(|_| Vec::new());
    let mut slides = Vec::new();
    for path in &args.slides {
        match slide::embed(&clip, path, &options, args.batch, args.pixels_out.as_deref(), items.as_mut()).await {
            Ok(s) => {
                if s.unreadable > 0 {
                    slide_failures += 1;
                    eprintln!("weights-tool: {}: {} of {} patches could not be read", s.path, s.unreadable, s.unreadable + s.patches.len());
                }
                slides.push(s)
            }
            Err(e) => {
                slide_failures += 1;
                eprintln!("weights-tool: skipped {e:#}");
            }
        }
    }
    if let (Some(out), Some(mut items)) = (&args.collection_out, items) {
        let manifest_bytes = std::fs::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        use sha2::Digest;
        let header = model_wasm::collection::Header {
            format: model_wasm::collection::FORMAT,
            model: args.model.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            manifest_sha256: model_wasm::collection::hex(&sha2::Sha256::digest(&manifest_bytes)),
            dim: clip.config.projection_dim,
        };
        for (id, item) in items.iter_mut().enumerate() {
            item.id = id as u64;
        }
        let refs: Vec<&model_wasm::collection::Item> = items.iter().collect();
        std::fs::write(out, model_wasm::collection::write(&header, &refs)).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("weights-tool: wrote {} patches to {}", items.len(), out.display());
    }
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let (ids, text_emb) = clip.embed_texts(&texts).await?;
    let image_emb: Vec<Vec<f32>> = images.iter().map(|i| i.embedding.clone()).collect();
    let out = EmbedOutput {
        model: args.model.display().to_string(),
        backend: clip.backend().kind.name().to_string(),
        precision: clip.backend().precision.name().to_string(),
        logits_per_image: clip.logits_per_image(&image_emb, &text_emb),
        images,
        texts: args
            .texts
            .iter()
            .zip(ids)
            .zip(text_emb)
            .map(|((text, input_ids), embedding)| TextOut { text: text.clone(), input_ids, embedding })
            .collect(),
        slides,
    };
    let mut stdout = std::io::stdout().lock();
    match args.format {
        Format::Json => serde_json::to_writer(&mut stdout, &out)?,
        Format::Table => write_table(&mut stdout, &out)?,
    }
    writeln!(stdout)?;
    if slide_failures > 0 {
        eprintln!("weights-tool: {slide_failures} slide(s) could not be embedded whole");
    }
    if failures > 0 {
        eprintln!("weights-tool: {failures} image(s) could not be embedded");
    }
    if failures + slide_failures > 0 {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_table(w: &mut impl Write, out: &EmbedOutput) -> std::io::Result<()> {
    writeln!(w, "model {} on {}; cosine similarity, image x text", out.model, out.backend)?;
    for (i, t) in out.texts.iter().enumerate() {
        writeln!(w, "  [{i}] {}", t.text)?;
    }
    write!(w, "{:>40}", "")?;
    for i in 0..out.texts.len() {
        write!(w, " {:>7}", format!("[{i}]"))?;
    }
    writeln!(w)?;
    for img in &out.images {
        let name = Path::new(&img.path).file_name().map_or(img.path.clone(), |n| n.to_string_lossy().into_owned());
        write!(w, "{name:>40}")?;
        for t in &out.texts {
            write!(w, " {:>7.4}", model_wasm::dot(&img.embedding, &t.embedding))?;
        }
        writeln!(w)?;
    }
    Ok(())
}

fn npy_name(path: &Path) -> String {
    format!("{}.npy", path.file_stem().map_or("image".into(), |s| s.to_string_lossy()))
}

/// NumPy `.npy` v1.0, little-endian f32, C order.
fn write_npy(path: &Path, p: &Pixels) -> anyhow::Result<()> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': (3, {}, {}), }}", p.height, p.width);
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + p.data.len() * 4);
    bytes.extend(b"\x93NUMPY\x01\x00");
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(p.data.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
