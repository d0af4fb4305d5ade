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

/// UI → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Download (or take from the cache), verify and load the converted model under `base`,
    /// a URL relative to the app (e.g. `models/demo`).
    Load { base: String },
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
    /// One image indexed; its JPEG thumbnail follows the header.
    Added { id: u64, name: String },
    /// A file that was not indexed, and why (unsupported, corrupt, empty, duplicate, too large).
    Skipped { name: String, reason: String },
    /// Progress of the current `Add`.
    Indexing { done: usize, total: usize, per_second: f64 },
    /// The current `Add` is over.
    Finished { added: usize, skipped: usize, cancelled: bool, seconds: f64 },
    /// Search results, best first. `query` echoes what was asked.
    Results { query: Query, hits: Vec<Hit> },
    /// Cached model bytes after `ClearModels`.
    ModelsCleared,
    /// A request failed as a whole (one bad file never does: see `Skipped`).
    Error { message: String },
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
    fn catalog_prefers_the_demo_model_and_q8() {
        let json = r#"{"format_version":1,"models":[
            {"id":"plip","name":"PLIP","variants":[{"dtype":"f32","bytes":600,"path":"plip-f32"},{"dtype":"q8","bytes":150,"path":"plip-q8"}]},
            {"id":"obscura-demo","name":"Demo","variants":[{"dtype":"q8","bytes":4,"path":"demo"}]}]}"#;
        let c: Catalog = serde_json::from_str(json).unwrap();
        assert_eq!(c.default_model().unwrap().id, "obscura-demo");
        assert_eq!(c.models[0].preferred().path, "plip-q8");
    }
}
