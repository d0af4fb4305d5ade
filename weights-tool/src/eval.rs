//! `weights-tool eval`: a model on a labelled set, through the lab's code (`index::lab`), so
//! that large sets can be evaluated natively and the browser's numbers checked against it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use index::lab::{self, labels::LabelTable, probe::ProbeOptions};
use serde::Serialize;

use crate::{Backend, IMAGE_EXTENSIONS, load_model};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Model directory (converted or a Hugging Face checkpoint, as for `embed`).
    #[arg(long)]
    model: PathBuf,
    /// The labelled set: a folder of class subfolders (<dir>/<class>/<image>, at any depth: the
    /// image's own folder is its class), or a folder of images with a file,label CSV.
    #[arg(long)]
    labelled: PathBuf,
    /// The file,label CSV (default: the one .csv file directly inside --labelled, if there is
    /// one). Files are matched by path relative to --labelled, or by name when that is unique.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// A prompt template, `{}` standing for the class. Repeatable: the class embedding is the
    /// ensemble (renormalised mean) over the templates. Default: the model's own.
    #[arg(long = "template")]
    templates: Vec<String>,
    /// Also fit a linear probe (logistic regression, C by 5-fold cross-validation) on a
    /// stratified split, and its few-shot curve.
    #[arg(long)]
    probe: bool,
    /// The probe's test share of each class.
    #[arg(long, default_value_t = 0.3)]
    test_fraction: f64,
    /// Seed of the probe's split, folds and few-shot draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Also write the per-class metrics as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
}

#[derive(Serialize)]
struct EvalOutput {
    #[serde(flatten)]
    report: lab::Report,
    backend: String,
    /// Every evaluated image: path relative to --labelled, true and predicted class.
    images: Vec<ImageResult>,
    /// Images without a label (not evaluated).
    unlabelled: Vec<String>,
    /// Images that could not be read or decoded (not evaluated), with the reason.
    skipped: Vec<Skipped>,
}

#[derive(Serialize)]
struct ImageResult {
    path: String,
    label: String,
    predicted: String,
}

#[derive(Serialize)]
struct Skipped {
    path: String,
    error: String,
}

/// Image files under `dir`, at any depth, as sorted '/'-separated relative paths.
fn walk(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading directory {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())) {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The prompt templates: given, else the converted model's own, else the known ones for its name.
fn templates_of(args: &EvalArgs) -> anyhow::Result<Vec<String>> {
    // Trimmed, blanks dropped: as the app reads its template box.
    let given: Vec<String> = args.templates.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    if !given.is_empty() {
        return Ok(given);
    }
    let manifest = args.model.join("manifest.json");
    if manifest.exists() {
        let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        let m = model_wasm::converted::Manifest::from_json(&text)?;
        if !m.card.templates.is_empty() {
            return Ok(m.card.templates);
        }
    }
    let name = args.model.canonicalize().unwrap_or(args.model.clone());
    Ok(model_wasm::convert::known_templates(&name.to_string_lossy()))
}

pub async fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let files = walk(&args.labelled)?;
    let csv = match &args.labels {
        Some(p) => Some(p.clone()),
        None => {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&args.labelled)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && lab::labels::is_label_csv(&p.to_string_lossy()))
                .collect();
            found.sort();
            if found.len() > 1 {
                bail!("{} CSV files in {}: name the labels with --labels", found.len(), args.labelled.display());
            }
            found.pop()
        }
    };
    let labels: Vec<Option<String>> = match &csv {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let table = LabelTable::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            files.iter().map(|f| table.label_of(f).map(String::from)).collect()
        }
        None => lab::labels::folder_labels(&files),
    };
    let labelled: Vec<(&str, &str)> = files.iter().zip(&labels).filter_map(|(f, l)| Some((f.as_str(), l.as_deref()?))).collect();
    let unlabelled: Vec<String> = files.iter().zip(&labels).filter(|(_, l)| l.is_none()).map(|(f, _)| f.clone()).collect();
    if labelled.is_empty() {
        let mut folders: Vec<String> = files.iter().filter_map(|f| lab::labels::folder_label(f)).collect();
        folders.dedup();
        if csv.is_none() && folders.len() == 1 {
            bail!("a labelled set needs at least two classes; found only \"{}\" in {}", folders[0], args.labelled.display());
        }
        bail!(
            "no labelled images in {} ({} image files): put them in class subfolders (<dir>/<class>/<image>) or list them in a file,label CSV",
            args.labelled.display(),
            files.len()
        );
    }
    let templates = templates_of(&args)?;
    let clip = load_model(&args.model, args.backend).await?;

    // Decode and embed; a bad image is listed and skipped.
    let mut skipped = Vec::new();
    let mut kept: Vec<(&str, &str)> = Vec::new();
    let mut embeddings: Vec<Vec<f32>> = Vec::new();
    let mut batch = Vec::new();
    let mut batch_items = Vec::new();
    for (i, &(file, label)) in labelled.iter().enumerate() {
        let path = args.labelled.join(file);
        match std::fs::read(&path).map_err(anyhow::Error::from).and_then(|b| Ok(clip.pixels(&b, file, model_wasm::Exif::Apply)?)) {
            Ok(p) => {
                batch.push(p);
                batch_items.push((file, label));
            }
            Err(e) => skipped.push(Skipped { path: file.to_string(), error: format!("{e:#}") }),
        }
        if batch.len() >= args.batch.max(1) || i + 1 == labelled.len() {
            if !batch.is_empty() {
                embeddings.extend(clip.embed_images(&batch).await?);
                kept.append(&mut batch_items);
                batch.clear();
            }
            eprint!("\rweights-tool: embedded {}/{} images", i + 1, labelled.len());
        }
    }
    eprintln!();
    let label_refs: Vec<&str> = kept.iter().map(|&(_, l)| l).collect();
    let (classes, truth) = lab::labels::class_indices(&label_refs);
    if classes.len() < 2 {
        bail!("a labelled set needs at least two classes; found {}", classes.first().map_or("none".to_string(), |c| format!("only \"{c}\"")));
    }
    let mut prompts = Vec::with_capacity(classes.len());
    for class in &classes {
        let texts = lab::zero_shot::prompts(class, &templates);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        prompts.push(clip.embed_texts(&refs).await?.1);
    }
    let options = ProbeOptions { test_fraction: args.test_fraction, seed: args.seed, ..ProbeOptions::default() };
    let model = args.model.canonicalize().unwrap_or(args.model.clone());
    let model = model.file_name().map_or_else(|| args.model.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut last = 0;
    let report = lab::evaluate(&model, &templates, &classes, &prompts, &embeddings, &truth, args.probe.then_some(&options), &mut |done, total| {
        if done * 20 / total.max(1) != last || done == total {
            last = done * 20 / total.max(1);
            eprint!("\rweights-tool: linear probe, {done}/{total} fits");
        }
    });
    if args.probe {
        eprintln!();
    }
    if let Some(e) = &report.probe_error {
        eprintln!("weights-tool: no linear probe: {e}");
    }
    if let Some(p) = &args.csv {
        std::fs::write(p, lab::metrics::csv(&report.metrics)).with_context(|| format!("writing {}", p.display()))?;
    }
    let images = kept
        .iter()
        .zip(&report.predicted)
        .map(|(&(path, label), &p)| ImageResult { path: path.to_string(), label: label.to_string(), predicted: classes[p].clone() })
        .collect();
    for s in &skipped {
        eprintln!("weights-tool: skipped {}: {}", s.path, s.error);
    }
    let failed = !skipped.is_empty();
    let out = EvalOutput { backend: clip.backend().kind.name().to_string(), report, images, unlabelled, skipped };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &out)?;
    use std::io::Write;
    writeln!(stdout)?;
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
