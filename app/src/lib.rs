//! Obscura's browser app. Two wasm binaries built by trunk: the UI (`src/main.rs`, main thread)
//! and the worker (`src/bin/worker.rs`) that owns the model and the index, so decoding,
//! preprocessing, encoding and search never block the page.
//!
//! This module is the message protocol between them. A message is a JS array whose first element
//! is a [`Request`] or an [`Event`] as JSON; file contents travel after it as `File` objects
//! (UI → worker, structured-cloned without copying into JSON) or `Uint8Array`s (thumbnails,
//! worker → UI). Nothing here touches the network: the worker fetches only the model's files,
//! from the app's own origin.

use serde::{Deserialize, Serialize};

/// The collection file format, shared with `weights-tool embed --collection-out`.
pub use model_wasm::collection;
pub use model_wasm::collection::Origin;
/// The lab's figures and report files.
pub mod lab;
#[cfg(target_arch = "wasm32")]
pub mod models;
#[cfg(target_arch = "wasm32")]
pub mod opfs;

/// UI → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Download (or take from the cache), verify and load the converted model under `base`,
    /// a URL relative to the app (e.g. `models/demo`). With `cpu`, on the CPU backend whatever
    /// the adapter, for that reason (the page sets it after the GPU failed).
    Load {
        base: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu: Option<String>,
    },
    /// Add the files that follow the header; `names` are their paths within the dropped folder.
    Add { names: Vec<String> },
    /// Stop the current `Add` after the images in flight.
    Cancel,
    /// Text → image search.
    Search { text: String, limit: usize },
    /// Image → image search from an indexed image.
    Similar { id: u64, limit: usize },
    /// Image → image search from the one file that follows, which is not added.
    QueryImage { name: String, limit: usize },
    /// Delete every model file this app has cached.
    ClearModels,
    /// Zero-shot classification of every indexed image against `labels`, each put into
    /// `template` (`{}` stands for the label) when there is one.
    Classify { labels: Vec<String>, template: Option<String> },
    /// Remove these images from the collection (and from its stored copy).
    Remove { ids: Vec<u64> },
    /// Remove every image of the current model's collection.
    ClearCollection,
    /// Send the collection as one file (an [`Event::Exported`] with the bytes after it).
    Export,
    /// Add the images of the collection file that follows (from an export).
    Import { name: String },
    /// Add a model from the files that follow (a Hugging Face or OpenCLIP checkpoint, or a
    /// converted model; `names` are their paths), converted to `dtype` (`f32`, `f16`, `q8`, `q4`).
    ImportModel { names: Vec<String>, dtype: String },
    /// Keep the model whose conversion fell below the fidelity bound (the user insists).
    KeepImport,
    /// Drop it.
    DiscardImport,
    /// List the models stored on this device ([`Event::LocalModels`]).
    ListModels,
    /// Delete a stored model, its files and its collection.
    RemoveModel { key: String },
    /// Change a stored model's prompt templates.
    SetTemplates { key: String, templates: Vec<String> },
    /// Evaluate the model on the labelled images of the collection: zero-shot with `templates`
    /// (`{}` stands for the class; several are ensembled), and a linear probe when `probe`
    /// ([`Event::Evaluated`], with [`Event::LabProgress`] on the way).
    Evaluate { templates: Vec<String>, probe: bool },
    /// A 2-D map of the collection's embeddings: `pca` at once, or `umap` ([`Event::Mapped`]).
    Map { method: String },
}

/// Worker → UI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The worker's wasm is running and listening.
    Booted,
    /// Model files: bytes so far of the total, across every file of the model.
    Download { loaded: u64, total: u64, cached: u64 },
    /// The model is verified and loaded.
    ModelReady { base: String, backend: Backend, detail: String, dim: usize, millis: f64 },
    ModelFailed { base: String, message: String },
    /// Images now in the collection (just indexed, imported, or restored from this browser's
    /// storage); their JPEG thumbnails follow the header, in the same order.
    Added { items: Vec<Item>, restored: bool },
    /// Images no longer in the collection.
    Removed { ids: Vec<u64> },
    /// Images whose label (class folder or CSV) is now this (`None`: no longer labelled).
    Labelled { labels: Vec<(u64, Option<String>)> },
    /// Progress of an evaluation or a map: `stage` says what runs (`embed prompts`, `probe`,
    /// `neighbours`, `layout`).
    LabProgress { stage: String, done: usize, total: usize },
    /// The evaluation of the labelled images `ids`, in the report's order, by the model loaded
    /// from `base` (a result for a model no longer loaded is dropped).
    Evaluated { base: String, ids: Vec<u64>, report: index::lab::Report, seconds: f64 },
    /// The map: a point per image of `ids`; the trustworthiness of the layout (its `k`
    /// neighbours, 10 where there are enough points), measured on up to 2,000 of them.
    Mapped { base: String, method: String, ids: Vec<u64>, points: Vec<[f32; 2]>, seconds: f64, trustworthiness: f64, k: usize },
    /// An evaluation or a map could not be made, and why.
    LabFailed { message: String },
    /// The stored collection of the loaded model has been read (`count` images).
    Restored { count: usize, dropped_tail: bool },
    /// A file that was not indexed, and why (unsupported, corrupt, empty, duplicate, too large).
    Skipped { name: String, reason: String },
    /// Progress of the current `Add`.
    Indexing { done: usize, total: usize, per_second: f64 },
    /// A slide was opened and its tissue tiled: its patches follow as `Indexing` progress.
    SlideOpened {
        name: String,
        format: String,
        width: u32,
        height: u32,
        /// Microns per pixel of level 0, and of the patches.
        mpp: f64,
        target_mpp: f64,
        level: usize,
        patches: usize,
        /// Fraction of the slide that is tissue.
        tissue: f64,
        /// Label, macro, thumbnail images in the file: listed, never shown.
        associated: Vec<String>,
    },
    /// The current `Add` is over.
    Finished { added: usize, skipped: usize, cancelled: bool, seconds: f64 },
    /// Search results, best first. `query` echoes what was asked.
    Results { query: Query, hits: Vec<Hit> },
    /// Cached model bytes after `ClearModels`.
    ModelsCleared,
    /// Zero-shot labels for every image.
    Classified { labels: Vec<String>, rows: Vec<Classification> },
    /// The collection file follows the header as bytes.
    Exported { file_name: String, count: usize },
    /// An import is done.
    Imported { name: String, added: usize, duplicates: usize },
    /// The encoder failed on the GPU and the model was reloaded on the CPU; nothing was lost.
    BackendChanged { backend: Backend, detail: String },
    /// Progress of a model import: `stage` is `read`, `convert`, `check` or `store`; bytes (or,
    /// for `check`, steps) done of the total.
    ImportProgress { stage: String, done: u64, total: u64 },
    /// The converted model against the unconverted weights on the bundled images and prompts.
    /// Below `required` the model is kept only if the user insists ([`Request::KeepImport`]).
    ImportChecked { fidelity: FidelityReport, passes: bool },
    /// The model is stored on this device (or, `duplicate`, already was), `seconds` after the
    /// files were given; `wasm_memory` is the worker's wasm memory then (it only grows, so this
    /// is its peak).
    ImportDone { model: LocalModel, duplicate: bool, seconds: f64, wasm_memory: u64 },
    /// The import failed (or was cancelled); nothing of it was kept.
    ImportFailed { message: String },
    /// The models stored on this device.
    LocalModels { models: Vec<LocalModel> },
    /// A request failed as a whole (one bad file never does: see `Skipped`).
    Error { message: String },
}

/// A model added from this computer and kept in this browser's private storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalModel {
    /// First 16 hex digits of the sha256 of its `manifest.json`: its storage folder and the key
    /// of its collection.
    pub key: String,
    pub name: String,
    /// Where it came from (the dropped folder's name).
    pub source: String,
    pub dtype: String,
    pub bytes: u64,
    pub license: String,
    pub domain: String,
    pub templates: Vec<String>,
    /// The fidelity measured when it was added (absent for a converted model added as is).
    #[serde(default)]
    pub fidelity: Option<FidelityReport>,
}

impl LocalModel {
    /// The model's `base` for [`Request::Load`].
    pub fn base(&self) -> String {
        format!("{LOCAL_PREFIX}{}", self.key)
    }
}

/// `base` prefix of models stored on this device.
pub const LOCAL_PREFIX: &str = "local/";

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityReport {
    pub dtype_required: f64,
    pub image_min: f64,
    pub text_min: f64,
    pub agreement: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Webgpu,
    Cpu,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Webgpu => "webgpu",
            Backend::Cpu => "cpu",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Query {
    Text { text: String },
    Similar { id: u64 },
    Image { name: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: u64,
    pub name: String,
    /// Set for a patch of a whole-slide image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}


#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub id: u64,
    /// Index into the labels of the best one.
    pub label: usize,
    /// Its probability (softmax over the labels of the model's logits).
    pub confidence: f32,
    /// Every label's probability, in label order.
    pub probs: Vec<f32>,
}

/// Zero-shot probabilities of one image over the labels: `softmax(exp(logit_scale) · cos)`, as
/// CLIP's `logits_per_image.softmax(-1)`. Returns the best label and every probability.
pub fn zero_shot(image: &[f32], labels: &[Vec<f32>], logit_scale: f32) -> (usize, Vec<f32>) {
    let scale = logit_scale.exp();
    let logits: Vec<f32> = labels.iter().map(|t| scale * image.iter().zip(t).map(|(a, b)| a * b).sum::<f32>()).collect();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let probs: Vec<f32> = exps.iter().map(|e| e / sum).collect();
    let best = probs.iter().enumerate().fold(0, |b, (i, p)| if *p > probs[b] { i } else { b });
    (best, probs)
}

/// Labels typed one per line: trimmed, blank lines and repeats dropped.
pub fn parse_labels(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.iter().any(|o| o == l) {
            out.push(l.to_string());
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    // Quote what needs it, and defuse spreadsheet formulas (a file named "=cmd|..." stays text).
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// The classification as CSV: file name, label, confidence, then one column per label.
pub fn classification_csv(labels: &[String], rows: &[(String, &Classification)]) -> String {
    let mut out = String::from("file,label,confidence");
    for l in labels {
        out.push(',');
        out.push_str(&csv_field(&format!("p({l})")));
    }
    out.push('\n');
    for (name, c) in rows {
        out.push_str(&csv_field(name));
        out.push(',');
        out.push_str(&csv_field(&labels[c.label]));
        out.push_str(&format!(",{:.6}", c.confidence));
        for p in &c.probs {
            out.push_str(&format!(",{p:.6}"));
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: u64,
    /// Cosine similarity of the normalised embeddings.
    pub score: f32,
}

/// Files larger than this are refused before reading (decompression bombs are refused later,
/// from the image header, by model-wasm).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Applies a prompt template (`{}` stands for the query) when there is one.
pub fn apply_template(template: Option<&str>, query: &str) -> String {
    match template {
        Some(t) if t.contains("{}") => t.replacen("{}", query.trim(), 1),
        _ => query.trim().to_string(),
    }
}

/// `12.3 MB`, `950 kB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.0} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// `1 min 05 s`, `42 s`.
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 60 { format!("{} min {:02} s", s / 60, s % 60) } else { format!("{s} s") }
}

/// A catalog of converted models (`models/catalog.json`, written by `weights-tool catalog`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Catalog {
    pub models: Vec<CatalogModel>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CatalogModel {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub templates: Vec<String>,
    pub variants: Vec<CatalogVariant>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CatalogVariant {
    pub dtype: String,
    pub bytes: u64,
    pub path: String,
}

impl CatalogModel {
    /// The variant the app downloads: the smallest of q8 and f16 that exists (q8 keeps cosine
    /// ≥ 0.995 with fp32 at a quarter of its bytes), else the first listed.
    pub fn preferred(&self) -> &CatalogVariant {
        ["q8", "f16", "f32", "q4"]
            .iter()
            .find_map(|d| self.variants.iter().find(|v| v.dtype == *d))
            .unwrap_or(&self.variants[0])
    }
}

impl Catalog {
    /// The model opened by default: the bundled demo model when listed, else the first.
    pub fn default_model(&self) -> Option<&CatalogModel> {
        self.models.iter().find(|m| m.variants.iter().any(|v| v.path == "demo")).or(self.models.first())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let r = Request::Search { text: "an H&E image of mucus.".into(), limit: 24 };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"type":"search","text":"an H&E image of mucus.","limit":24}"#);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r);
        let e = Event::Results { query: Query::Similar { id: 3 }, hits: vec![Hit { id: 4, score: 0.5 }] };
        assert_eq!(serde_json::from_str::<Event>(&serde_json::to_string(&e).unwrap()).unwrap(), e);
    }

    #[test]
    fn templates_and_units() {
        assert_eq!(apply_template(Some("an H&E image of {}."), " mucus "), "an H&E image of mucus.");
        assert_eq!(apply_template(None, "mucus"), "mucus");
        assert_eq!(apply_template(Some("no slot"), "mucus"), "mucus");
        assert_eq!(human_bytes(3_400_000), "3.4 MB");
        assert_eq!(human_bytes(950), "950 B");
        assert_eq!(human_seconds(65.2), "1 min 05 s");
    }

    #[test]
    fn zero_shot_is_clips_softmax() {
        let labels = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let (best, p) = zero_shot(&[0.6, 0.8], &labels, 100f32.ln());
        assert_eq!(best, 1);
        // softmax([60, 80])
        assert!((p[1] - 1.0 / (1.0 + (-20f32).exp())).abs() < 1e-6 && (p[0] + p[1] - 1.0).abs() < 1e-6);
        assert_eq!(parse_labels(" tumour \n\nmucus\ntumour\n"), vec!["tumour", "mucus"]);
    }

    #[test]
    fn csv_quotes_and_defuses() {
        let labels = vec!["a, b".to_string(), "c".to_string()];
        let c = Classification { id: 0, label: 1, confidence: 0.75, probs: vec![0.25, 0.75] };
        let csv = classification_csv(&labels, &[("=x\"y.png".into(), &c)]);
        assert_eq!(csv, "file,label,confidence,\"p(a, b)\",p(c)\n\"'=x\"\"y.png\",c,0.750000,0.250000,0.750000\n");
    }

    #[test]
    fn catalog_prefers_the_demo_model_and_q8() {
        let json = r#"{"format_version":1,"models":[
            {"id":"plip","name":"PLIP","variants":[{"dtype":"f32","bytes":600,"path":"plip-f32"},{"dtype":"q8","bytes":150,"path":"plip-q8"}]},
            {"id":"obscura-demo","name":"Demo","variants":[{"dtype":"q8","bytes":4,"path":"demo"}]}]}"#;
        let c: Catalog = serde_json::from_str(json).unwrap();
        assert_eq!(c.default_model().unwrap().id, "obscura-demo");
        assert_eq!(c.models[0].preferred().path, "plip-q8");
    }
}
