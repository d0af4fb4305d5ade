//! The page's shared state: the signals every view reads, the worker they talk to, and the
//! actions more than one view (or the event loop) takes. Views own their local signals.

use std::collections::HashMap;

use app::{Backend, Classification, Hit, Origin, Query, Request, apply_template};
use js_sys::{Array, Uint8Array};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, BlobPropertyBag, File, HtmlAnchorElement, Url, Worker};

use super::lab::LabState;
use super::model_panel::ModelState;
use super::spawn::{self, Spawned};

/// Where the last chosen model is remembered (this browser only).
pub const LAST_MODEL: &str = "obscura-model";

/// Results per page.
pub const PAGE: usize = 24;

/// Labels of the last classification, and each image's.
#[derive(Clone, Debug, PartialEq)]
pub struct Classes {
    pub labels: Vec<String>,
    pub rows: HashMap<u64, Classification>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Thumb {
    pub id: u64,
    pub name: String,
    pub url: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub per_second: f64,
}

/// What the gallery shows: the whole collection, or a subset chosen elsewhere (a classification
/// label, a confusion-matrix cell, a lasso on the map), with what chose it.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Label(usize),
    Ids { title: String, ids: std::collections::HashSet<u64> },
}

#[derive(Clone, Copy)]
pub struct Ctx {
    pub models: ModelState,
    /// The worker; none until the page has chosen which build to start (spawn.rs).
    pub worker: StoredValue<Option<Worker>, LocalStorage>,
    /// Whether the worker is the threaded CPU build, and whether that build failed to start here.
    pub threaded: StoredValue<bool>,
    pub threads_failed: StoredValue<bool>,
    /// The worker's message and error handlers, carried over to a replacement worker.
    pub handlers: StoredValue<Option<(js_sys::Function, js_sys::Function)>, LocalStorage>,
    /// Images dropped before the model is ready wait here and are added once it is.
    pub waiting: StoredValue<Vec<(String, File)>, LocalStorage>,
    /// Base of the model loaded in the worker.
    pub loaded: RwSignal<Option<String>>,
    pub download_progress: RwSignal<Option<(u64, u64, u64)>>,
    pub backend: RwSignal<Option<(Backend, String)>>,
    pub force_cpu: RwSignal<Option<String>>,
    pub booted: RwSignal<bool>,
    pub status: RwSignal<String>,
    pub error: RwSignal<Option<String>>,
    pub storage: RwSignal<Option<u64>>,
    pub thumbs: RwSignal<Vec<Thumb>>,
    pub by_id: StoredValue<HashMap<u64, (String, String)>>,
    /// Slide patches: where each lies in its slide.
    pub origins: StoredValue<HashMap<u64, Origin>>,
    /// Each labelled image's label (from class folders or a CSV), kept with the collection.
    pub labels: RwSignal<HashMap<u64, String>>,
    pub progress: RwSignal<Option<Progress>>,
    pub adding: RwSignal<bool>,
    pub skipped: RwSignal<Vec<(String, String)>>,
    pub results: RwSignal<Option<(Query, Vec<Hit>)>>,
    pub last_query: StoredValue<Option<Request>>,
    pub limit: RwSignal<usize>,
    pub query: RwSignal<String>,
    pub use_template: RwSignal<bool>,
    pub viewer: RwSignal<Option<u64>>,
    pub classes: RwSignal<Option<Classes>>,
    pub filter: RwSignal<Option<Filter>>,
    pub lab: LabState,
}

impl Ctx {
    pub fn new() -> Self {
        Ctx {
            models: ModelState::new(),
            worker: StoredValue::new_local(None),
            threaded: StoredValue::new(false),
            threads_failed: StoredValue::new(false),
            handlers: StoredValue::new_local(None),
            waiting: StoredValue::new_local(Vec::new()),
            loaded: RwSignal::new(None),
            download_progress: RwSignal::new(None),
            backend: RwSignal::new(None),
            force_cpu: RwSignal::new(None),
            booted: RwSignal::new(false),
            status: RwSignal::new("Starting…".into()),
            error: RwSignal::new(None),
            storage: RwSignal::new(None),
            thumbs: RwSignal::new(Vec::new()),
            by_id: StoredValue::new(HashMap::new()),
            origins: StoredValue::new(HashMap::new()),
            labels: RwSignal::new(HashMap::new()),
            progress: RwSignal::new(None),
            adding: RwSignal::new(false),
            skipped: RwSignal::new(Vec::new()),
            results: RwSignal::new(None),
            last_query: StoredValue::new(None),
            limit: RwSignal::new(PAGE),
            query: RwSignal::new(String::new()),
            use_template: RwSignal::new(true),
            viewer: RwSignal::new(None),
            classes: RwSignal::new(None),
            filter: RwSignal::new(None),
            lab: LabState::new(),
        }
    }

    /// Replaces the worker, its handlers carried over: after the GPU failed (`cpu_only`), after the
    /// threaded build failed to start, or to move from the WebGPU build's one-thread CPU path to
    /// the threaded build. The collection is in this browser's storage: it comes back when the
    /// new worker has loaded the model (its `Booted` starts that).
    pub fn replace_worker(self, cpu_only: bool) {
        self.booted.set(false);
        self.loaded.set(None);
        self.backend.set(None);
        self.worker.with_value(|w| {
            if let Some(w) = w {
                w.terminate();
            }
        });
        self.install(spawn::new_worker(cpu_only, !self.threads_failed.get_value()));
    }

    /// Starts talking to this worker: the page's handlers on it.
    pub fn install(self, fresh: Spawned) {
        self.handlers.with_value(|h| {
            if let Some((m, e)) = h {
                fresh.worker.set_onmessage(Some(m));
                fresh.worker.set_onerror(Some(e));
            }
        });
        self.threaded.set_value(fresh.threaded);
        self.worker.set_value(Some(fresh.worker));
    }

    pub fn send(self, request: &Request, files: &[File]) {
        self.worker.with_value(|w| {
            if let Some(w) = w {
                send(w, request, files);
            }
        });
    }

    /// The selected model's first prompt template.
    pub fn template(self) -> Option<String> {
        self.models.template_of(&self.models.model.get()?)
    }

    pub fn model_ready(self) -> bool {
        self.loaded.get_untracked().is_some() && self.backend.get_untracked().is_some()
    }

    /// Drops everything shown of the current collection (another model's is coming).
    pub fn forget_collection(self) {
        self.thumbs.with_untracked(|t| t.iter().for_each(|t| Url::revoke_object_url(&t.url).unwrap_or_default()));
        self.thumbs.set(Vec::new());
        self.by_id.update_value(HashMap::clear);
        self.origins.update_value(HashMap::clear);
        self.labels.set(HashMap::new());
        self.results.set(None);
        self.classes.set(None);
        self.filter.set(None);
        self.viewer.set(None);
        self.lab.clear();
    }

    /// Loads the selected model in the worker, unless it is loaded already.
    pub fn load_model(self) {
        let Some(id) = self.models.model.get_untracked() else { return };
        let Some(base) = self.models.base_of(&id) else { return };
        if self.loaded.get_untracked().as_deref() == Some(base.as_str()) || !self.booted.get_untracked() {
            return;
        }
        self.models.failed.set(None);
        if let Some(s) = local_storage() {
            let _ = s.set_item(LAST_MODEL, &id);
        }
        // Each model has its own collection: the worker restores this model's after loading.
        self.forget_collection();
        self.loaded.set(Some(base.clone()));
        self.backend.set(None);
        self.status.set(format!("Loading {}…", self.models.name_of(&id)));
        self.send(&Request::Load { base, cpu: self.force_cpu.get_untracked() }, &[]);
    }

    /// Adds files (paths within what was dropped), or keeps them until the model is ready.
    pub fn add_files(self, list: Vec<(String, File)>) {
        if list.is_empty() {
            return;
        }
        if !self.model_ready() {
            self.waiting.update_value(|w| w.extend(list));
            let n = self.waiting.with_value(Vec::len);
            self.status.set(format!("{n} images waiting for the model: they are added as soon as it is ready"));
            return;
        }
        let (names, files): (Vec<String>, Vec<File>) = list.into_iter().unzip();
        self.skipped.set(Vec::new());
        self.adding.set(true);
        self.progress.set(Some(Progress { done: 0, total: files.len(), per_second: 0.0 }));
        self.send(&Request::Add { names }, &files);
    }

    /// Text → image search for what is in the search box.
    pub fn search(self, limit: usize) {
        let text = self.query.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        let text = if self.use_template.get_untracked() { apply_template(self.template().as_deref(), &text) } else { text };
        self.limit.set(limit);
        let request = Request::Search { text, limit };
        self.last_query.set_value(Some(request.clone()));
        self.send(&request, &[]);
    }

    /// Opens image `id` in the viewer and searches for images like it.
    pub fn similar(self, id: u64) {
        self.viewer.set(Some(id));
        self.limit.set(PAGE);
        let request = Request::Similar { id, limit: PAGE };
        self.last_query.set_value(Some(request.clone()));
        self.send(&request, &[]);
    }

    pub fn name_of(self, id: u64) -> Option<String> {
        self.by_id.with_value(|m| m.get(&id).map(|x| x.0.clone()))
    }

    pub fn thumb_of(self, id: u64) -> Option<String> {
        self.by_id.with_value(|m| m.get(&id).map(|x| x.1.clone()))
    }

    /// Refreshes the storage estimate in the footer.
    pub fn refresh_storage(self) {
        let storage = self.storage;
        wasm_bindgen_futures::spawn_local(async move { storage.set(storage_used().await) });
    }
}

pub fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

pub fn send(worker: &Worker, request: &Request, files: &[File]) {
    let msg = Array::new();
    msg.push(&JsValue::from_str(&serde_json::to_string(request).expect("requests serialise")));
    for f in files {
        msg.push(f);
    }
    if let Err(e) = worker.post_message(&msg) {
        web_sys::console::error_2(&"postMessage failed".into(), &e);
    }
}

pub fn blob_url(bytes: &Uint8Array, mime: &str) -> String {
    let parts = Array::of1(bytes);
    let opts = BlobPropertyBag::new();
    opts.set_type(mime);
    Blob::new_with_u8_array_sequence_and_options(&parts, &opts)
        .and_then(|b| Url::create_object_url_with_blob(&b))
        .unwrap_or_default()
}

/// Saves `blob` as `name` through the browser's download (no network involved).
pub fn download(blob: &Blob, name: &str) {
    let Ok(url) = Url::create_object_url_with_blob(blob) else { return };
    let a: Option<HtmlAnchorElement> =
        web_sys::window().and_then(|w| w.document()).and_then(|d| d.create_element("a").ok()).map(JsCast::unchecked_into);
    if let Some(a) = a {
        a.set_href(&url);
        a.set_download(name);
        a.click();
    }
    set_timeout(move || Url::revoke_object_url(&url).unwrap_or_default(), std::time::Duration::from_secs(10));
}

/// Saves text as a file of type `mime`.
pub fn download_text(text: &str, mime: &str, name: &str) {
    let opts = BlobPropertyBag::new();
    opts.set_type(mime);
    if let Ok(blob) = Blob::new_with_str_sequence_and_options(&Array::of1(&JsValue::from_str(text)), &opts) {
        download(&blob, name);
    }
}

pub async fn storage_used() -> Option<u64> {
    let storage = web_sys::window()?.navigator().storage();
    let estimate: web_sys::StorageEstimate = JsFuture::from(storage.estimate().ok()?).await.ok()?.unchecked_into();
    estimate.get_usage().map(|u| u as u64)
}
