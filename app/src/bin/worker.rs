//! The worker: owns the model and the index. Downloads and verifies the model (sha256 of every
//! shard, shapes of every tensor) with byte-level progress, keeps its files in the Cache API so
//! the next visit loads offline, then decodes, preprocesses, embeds and indexes images and
//! answers searches. Image bytes arrive as `File`s from the page and never leave this worker:
//! the only requests it makes are for the model's files, on the app's own origin.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the worker runs in the browser: build it with trunk (see the README)");
}

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    worker::start();
}

#[cfg(target_arch = "wasm32")]
mod worker {
    use std::cell::{Cell, RefCell};
    use std::collections::{BTreeMap, HashMap};
    use std::rc::Rc;

    use app::collection::{self, Header};
    use app::{Backend, Classification, Event, FidelityReport, Hit, Item, LOCAL_PREFIX, LocalModel, MAX_FILE_BYTES, Origin, Query, Request};
    use model_wasm::slide::{self, Slide, TilingOptions};
    use app::models;
    use model_wasm::convert::{self, ConvertOptions, Converted, Converter, Fidelity, Probe};
    use model_wasm::{Checkpoint, Layout, ModelCard};
    use index::Index;
    use js_sys::{Array, Promise, Uint8Array};
    use app::opfs;
    use model_wasm::{BackendChoice, BackendKind, Clip, ConvertedFiles, Exif, Pixels, Precision, converted, preprocess};
    use sha2::{Digest, Sha256};
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::{JsFuture, spawn_local};
    use web_sys::{DedicatedWorkerGlobalScope, File, MessageEvent, Response};

    /// Cache API bucket for model files. Bump when the cached layout changes.
    const CACHE: &str = "obscura-models-v1";
    /// Images per encoder call: large enough to keep the GPU busy, small enough for steady progress.
    const BATCH: usize = 8;

    /// What the worker keeps of an indexed image (its thumbnail lives only in the stored file).
    struct Entry {
        hash: [u8; 32],
        embedding: Vec<f32>,
    }

    #[derive(Default)]
    struct State {
        clip: Option<Rc<Clip>>,
        /// `models/...` path of the loaded model, and the sha256 of its manifest (hex).
        base: String,
        manifest_sha256: String,
        index: Option<Index>,
        /// The indexed images by id; ids only grow, so this is insertion order.
        items: BTreeMap<u64, Entry>,
        hashes: HashMap<[u8; 32], String>,
        next_id: u64,
        store: Option<opfs::File>,
        cancel: Cell<bool>,
        adding: Cell<bool>,
        /// A model import is running.
        importing: Cell<bool>,
        /// `compact_in_background` is running.
        compacting: Cell<bool>,
        /// A converted model that fell below the fidelity bound, waiting for Keep or Discard.
        pending: Option<(LocalModel, Converted)>,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    fn scope() -> DedicatedWorkerGlobalScope {
        js_sys::global().unchecked_into()
    }

    fn post(event: &Event) {
        post_with(event, None);
    }

    fn post_with(event: &Event, payload: Option<&JsValue>) {
        let msg = Array::new();
        msg.push(&JsValue::from_str(&serde_json::to_string(event).expect("events serialise")));
        if let Some(p) = payload {
            msg.push(p);
        }
        let _ = scope().post_message(&msg);
    }

    fn js_err(e: JsValue) -> String {
        e.as_string()
            .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
            .unwrap_or_else(|| format!("{e:?}"))
    }

    pub fn start() {
        let onmessage = Closure::<dyn Fn(MessageEvent)>::new(|msg: MessageEvent| {
            let data = Array::from(&msg.data());
            let Some(header) = data.get(0).as_string() else { return };
            let request: Request = match serde_json::from_str(&header) {
                Ok(r) => r,
                Err(e) => return post(&Event::Error { message: format!("bad request: {e}") }),
            };
            if request == Request::Cancel {
                STATE.with(|s| s.borrow().cancel.set(true));
                return;
            }
            let files: Vec<File> = data.iter().skip(1).filter_map(|v| v.dyn_into::<File>().ok()).collect();
            spawn_local(handle(request, files));
        });
        scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        onmessage.forget();
        post(&Event::Booted);
    }

    async fn handle(request: Request, files: Vec<File>) {
        let result = match request {
            Request::Load { base, cpu } => {
                if let Err(message) = load(&base, cpu).await {
                    post(&Event::ModelFailed { base, message });
                }
                Ok(())
            }
            Request::Add { names } => add(files, names).await,
            Request::Search { text, limit } => search_text(text, limit).await,
            Request::Similar { id, limit } => similar(id, limit),
            Request::QueryImage { name, limit } => query_image(files, name, limit).await,
            Request::ClearModels => clear_models().await,
            Request::Classify { labels, template } => classify(labels, template).await,
            Request::Remove { ids } => remove(ids).await,
            Request::ClearCollection => clear_collection().await,
            Request::Export => export().await,
            Request::Import { name } => import(files, name).await,
            Request::ImportModel { names, dtype } => {
                if STATE.with(|s| s.borrow().importing.replace(true)) {
                    return post(&Event::ImportFailed { message: "a model is already being added: wait or cancel".into() });
                }
                STATE.with(|s| s.borrow().cancel.set(false));
                IMPORT_STARTED.with(|t| t.set(js_sys::Date::now()));
                let result = import_model(files, names, dtype).await;
                STATE.with(|s| s.borrow().importing.set(false));
                if let Err(message) = result {
                    post(&Event::ImportFailed { message });
                }
                Ok(())
            }
            Request::KeepImport => keep_import().await,
            Request::DiscardImport => {
                STATE.with(|s| s.borrow_mut().pending = None);
                post(&Event::ImportFailed { message: "discarded: the converted model was not kept".into() });
                Ok(())
            }
            Request::ListModels => list_models().await,
            Request::RemoveModel { key } => remove_model(key).await,
            Request::SetTemplates { key, templates } => match models::set_templates(&key, templates).await {
                Ok(_) => list_models().await,
                Err(e) => Err(e),
            },
            Request::Cancel => Ok(()),
        };
        if let Err(message) = result {
            post(&Event::Error { message });
        }
    }

    // ------------------------------------------------------------------ model files

    async fn cache() -> Result<web_sys::Cache, String> {
        let caches = scope().caches().map_err(js_err)?;
        JsFuture::from(caches.open(CACHE)).await.map(JsCast::unchecked_into).map_err(js_err)
    }

    async fn response_bytes(resp: &Response, mut progress: impl FnMut(u64)) -> Result<Vec<u8>, String> {
        let Some(body) = resp.body() else { return Ok(Vec::new()) };
        let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        let mut out = Vec::new();
        loop {
            let chunk = JsFuture::from(reader.read()).await.map_err(js_err)?;
            if js_sys::Reflect::get(&chunk, &"done".into()).map_err(js_err)?.is_truthy() {
                break;
            }
            let value: Uint8Array = js_sys::Reflect::get(&chunk, &"value".into()).map_err(js_err)?.unchecked_into();
            let start = out.len();
            out.resize(start + value.length() as usize, 0);
            value.copy_to(&mut out[start..]);
            progress(value.length() as u64);
        }
        Ok(out)
    }

    async fn fetch(url: &str) -> Result<Response, String> {
        let resp: Response =
            JsFuture::from(scope().fetch_with_str(url)).await.map_err(|e| format!("{url}: {}", js_err(e)))?.unchecked_into();
        if !resp.ok() {
            return Err(format!("{url}: HTTP {} {}", resp.status(), resp.status_text()));
        }
        Ok(resp)
    }

    /// A small file (manifest, tokenizer): network first so a redeployed model is seen, the
    /// cache when offline.
    async fn small_file(cache: &web_sys::Cache, url: &str) -> Result<Vec<u8>, String> {
        match fetch(url).await {
            Ok(resp) => {
                let bytes = response_bytes(&resp, |_| {}).await?;
                store(cache, url, &bytes).await;
                Ok(bytes)
            }
            Err(network) => match cached(cache, url).await {
                Some(bytes) => Ok(bytes),
                None => Err(network),
            },
        }
    }

    async fn cached(cache: &web_sys::Cache, url: &str) -> Option<Vec<u8>> {
        let hit = JsFuture::from(cache.match_with_str(url)).await.ok()?;
        let resp: Response = hit.dyn_into().ok()?;
        response_bytes(&resp, |_| {}).await.ok()
    }

    async fn store(cache: &web_sys::Cache, url: &str, bytes: &[u8]) {
        let mut copy = bytes.to_vec();
        if let Ok(resp) = Response::new_with_opt_u8_array(Some(&mut copy)) {
            // A failed put (quota, private mode) only costs a download next time.
            let _ = JsFuture::from(cache.put_with_str(url, &resp)).await;
        }
    }

    /// Downloads (or takes from the cache) and verifies the model's files, and builds the model
    /// on `choice`. Returns it with the sha256 of its manifest.
    async fn fetch_model(base: &str, choice: BackendChoice) -> Result<(Clip, String), String> {
        if let Some(key) = base.strip_prefix(LOCAL_PREFIX) {
            let (manifest_bytes, tokenizer_json, shards) = models::read(key).await?;
            let total = shards.values().map(|s| s.len() as u64).sum();
            post(&Event::Download { loaded: total, total, cached: total });
            let manifest_sha256 = collection::hex(&Sha256::digest(&manifest_bytes));
            let manifest_json = String::from_utf8_lossy(&manifest_bytes);
            let clip = Clip::from_converted_parts(&manifest_json, &shards, &tokenizer_json, choice).await.map_err(|e| e.to_string())?;
            return Ok((clip, manifest_sha256));
        }
        let cache = cache().await?;
        let manifest_bytes = small_file(&cache, &format!("{base}/manifest.json")).await?;
        let manifest_sha256 = collection::hex(&Sha256::digest(&manifest_bytes));
        let manifest_json = String::from_utf8(manifest_bytes).map_err(|_| format!("{base}/manifest.json is not UTF-8"))?;
        let manifest = converted::Manifest::from_json(&manifest_json).map_err(|e| e.to_string())?;
        let total: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
        let tokenizer_json = small_file(&cache, &format!("{base}/{}", manifest.tokenizer)).await?;

        let mut shards = HashMap::new();
        let (mut loaded, mut from_cache) = (0u64, 0u64);
        post(&Event::Download { loaded, total, cached: from_cache });
        for shard in &manifest.shards {
            let url = format!("{base}/{}", shard.file);
            // Cached bytes are used only if they still match the manifest's sha256.
            if let Some(bytes) = cached(&cache, &url).await.filter(|b| converted::check_shard(shard, b).is_ok()) {
                loaded += bytes.len() as u64;
                from_cache += bytes.len() as u64;
                post(&Event::Download { loaded, total, cached: from_cache });
                shards.insert(shard.file.clone(), bytes);
                continue;
            }
            let resp = fetch(&url).await?;
            let mut last = js_sys::Date::now();
            let bytes = response_bytes(&resp, |n| {
                loaded += n;
                let now = js_sys::Date::now();
                if now - last > 100.0 {
                    last = now;
                    post(&Event::Download { loaded, total, cached: from_cache });
                }
            })
            .await?;
            converted::check_shard(shard, &bytes).map_err(|e| e.to_string())?;
            store(&cache, &url, &bytes).await;
            shards.insert(shard.file.clone(), bytes);
        }
        post(&Event::Download { loaded: total, total, cached: from_cache });
        let clip = Clip::from_converted(ConvertedFiles { manifest_json, tokenizer_json, shards }, choice)
            .await
            .map_err(|e| e.to_string())?;
        Ok((clip, manifest_sha256))
    }

    fn describe(clip: &Clip) -> (Backend, String) {
        let info = clip.backend().clone();
        match info.kind {
            BackendKind::Wgpu => {
                // Browsers often hide the adapter's name: wgpu then reports " (BrowserWebGpu)".
                let name = info.adapter.unwrap_or_default();
                let name = name.trim();
                let name = if name.is_empty() || name.starts_with('(') { "WebGPU" } else { name };
                (Backend::Webgpu, format!("{name}, {} compute", info.precision.name()))
            }
            _ => (Backend::Cpu, info.fallback_reason.unwrap_or_else(|| "CPU backend".into())),
        }
    }

    async fn load(base: &str, cpu: Option<String>) -> Result<(), String> {
        let started = js_sys::Date::now();
        let base = base.trim_end_matches('/');
        // Let go of the previous model's collection file before opening another.
        STATE.with(|s| s.borrow_mut().store = None);
        let choice = if cpu.is_some() { BackendChoice::Cpu } else { BackendChoice::Auto };
        let (clip, manifest_sha256) = fetch_model(base, choice).await?;
        let (backend, mut detail) = describe(&clip);
        if let Some(reason) = cpu {
            detail = reason;
        }
        let dim = clip.config.projection_dim;
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.clip = Some(Rc::new(clip));
            s.base = base.to_string();
            s.manifest_sha256 = manifest_sha256;
        });
        let header = header()?;
        post(&Event::ModelReady { base: base.to_string(), backend, detail, dim, millis: js_sys::Date::now() - started });
        restore(header).await
    }

    /// The loaded model's file names in OPFS: one collection per model manifest, so embeddings of
    /// different models (or of a redeployed model) never mix.
    fn file_names(header: &Header) -> (String, String) {
        collection_files(&header.manifest_sha256[..16])
    }

    /// The collection and index files of the model whose manifest sha256 starts with `key`.
    fn collection_files(key: &str) -> (String, String) {
        (format!("{key}.collection"), format!("{key}.index"))
    }

    /// Opens the loaded model's stored collection (creating it), drops a torn tail, rebuilds the
    /// worker's state from it and sends the images to the page.
    async fn restore(header: Header) -> Result<(), String> {
        let (store, items, dropped_tail) = match open_collection(&header).await {
            Ok(opened) => opened,
            Err(e) => {
                // No private storage (a browser without OPFS, another tab holding the file): the
                // app still works, for this tab only, and says so.
                post(&Event::Error {
                    message: format!("This browser's storage could not be opened ({e}): images added now are kept only until the tab closes."),
                });
                (None, Vec::new(), false)
            }
        };
        let index = index_for(&header, &items).await?;
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.index = Some(index);
            s.items.clear();
            s.hashes.clear();
            s.next_id = items.iter().map(|i| i.id + 1).max().unwrap_or(0);
            for item in &items {
                s.hashes.insert(item.hash, item.name.clone());
                s.items.insert(item.id, Entry { hash: item.hash, embedding: item.embedding.clone() });
            }
            s.store = store;
        });
        // A rebuilt index holds its rows exactly until the graph is built, step by step.
        compact_in_background();
        post(&Event::Restored { count: items.len(), dropped_tail });
        for chunk in items.chunks(256) {
            send_items(chunk, true);
        }
        Ok(())
    }

    /// Opens the model's collection file (creating it) and reads it, cutting off a torn tail.
    /// Returns the open file, the images in it and whether a tail was dropped.
    async fn open_collection(header: &Header) -> Result<(Option<opfs::File>, Vec<collection::Item>, bool), String> {
        let (name, _) = file_names(header);
        let mut file = opfs::File::open(&name).await?;
        let bytes = file.read_all()?;
        let parsed = match collection::parse(&bytes) {
            _ if bytes.is_empty() => None,
            Ok(p) if p.header.dim == header.dim => Some(p),
            // Unreadable (or from a future format): keep it aside rather than lose it.
            Ok(_) | Err(_) => {
                opfs::write(&format!("{name}.unreadable-{}", js_sys::Date::now() as u64), &bytes).await?;
                None
            }
        };
        match parsed {
            Some(p) => {
                if p.torn {
                    file.truncate(p.valid_len as u64)?;
                }
                Ok((Some(file), p.items, p.torn))
            }
            None => {
                file.replace(&collection::header_bytes(header))?;
                Ok((Some(file), Vec::new(), false))
            }
        }
    }

    /// The saved index when it holds exactly `items`; else one with them all as fresh rows
    /// (searched exactly; `compact_in_background` then builds the graph without blocking searches).
    async fn index_for(header: &Header, items: &[collection::Item]) -> Result<Index, String> {
        if !items.is_empty() {
            let (_, index_name) = file_names(header);
            let saved = opfs::read(&index_name).await.ok().flatten().and_then(|b| Index::from_bytes(&b).ok());
            if let Some(ix) = saved.filter(|ix| ix.dim() == header.dim && ix.len() == items.len() && items.iter().all(|i| ix.contains(i.id))) {
                return Ok(ix);
            }
        }
        let mut ix = Index::new(header.dim).map_err(|e| e.to_string())?;
        for item in items {
            ix.insert(item.id, &item.embedding).map_err(|e| e.to_string())?;
        }
        Ok(ix)
    }

    /// Tells the page about images now in the collection, thumbnails after the header.
    fn send_items(items: &[collection::Item], restored: bool) {
        let event = Event::Added {
            items: items.iter().map(|i| Item { id: i.id, name: i.name.clone(), origin: i.origin.clone() }).collect(),
            restored,
        };
        let msg = Array::new();
        msg.push(&JsValue::from_str(&serde_json::to_string(&event).expect("events serialise")));
        for i in items {
            msg.push(&Uint8Array::from(&i.thumb[..]));
        }
        let _ = scope().post_message(&msg);
    }

    /// Appends records to the stored collection. A failed write is reported once per call; the
    /// images stay searchable in this tab.
    fn persist(bytes: &[u8]) {
        let result = STATE.with(|s| s.borrow_mut().store.as_mut().map(|f| f.append(bytes)));
        if let Some(Err(e)) = result {
            post(&Event::Error { message: format!("could not save to this browser's storage: {e}") });
        }
    }

    /// Saves the index so the next visit need not rebuild it.
    async fn save_index() {
        let Some((name, bytes)) = STATE.with(|s| {
            let s = s.borrow();
            let ix = s.index.as_ref()?;
            let key = s.manifest_sha256.get(..16)?.to_string();
            Some((format!("{key}.index"), ix.to_bytes()))
        }) else {
            return;
        };
        if let Err(e) = opfs::write(&name, &bytes).await {
            web_sys::console::warn_1(&format!("index not saved: {e}").into());
        }
    }

    fn header() -> Result<Header, String> {
        STATE.with(|s| {
            let s = s.borrow();
            let clip = s.clip.as_ref().ok_or("the model is not loaded yet")?;
            Ok(Header {
                format: collection::FORMAT,
                model: s.base.trim_start_matches("models/").to_string(),
                manifest_sha256: s.manifest_sha256.clone(),
                dim: clip.config.projection_dim,
            })
        })
    }

    /// The GPU failed: reload the model from the cached files, keeping the collection, and say
    /// so. f16 compute steps down to f32 on the same GPU (an activation can overflow f16, or a
    /// driver's f16 kernels can be broken); f32 on the GPU (e.g. the device was lost) to the CPU.
    async fn fall_back(from: &Clip, error: &str) -> Result<Rc<Clip>, String> {
        let (choice, backend, detail) = if from.backend().precision == Precision::F16 {
            (BackendChoice::WgpuF32, Backend::Webgpu, format!("f16 compute failed ({error}), now f32 compute"))
        } else {
            (BackendChoice::Cpu, Backend::Cpu, format!("the GPU failed ({error})"))
        };
        web_sys::console::warn_1(&format!("GPU encoder failed, reloading with {choice:?}: {error}").into());
        let base = STATE.with(|s| s.borrow().base.clone());
        let (clip, _) = fetch_model(&base, choice).await?;
        let clip = Rc::new(clip);
        STATE.with(|s| s.borrow_mut().clip = Some(clip.clone()));
        post(&Event::BackendChanged { backend, detail });
        Ok(clip)
    }

    fn on_gpu(clip: &Clip) -> bool {
        clip.backend().kind == BackendKind::Wgpu
    }

    async fn embed_images(pixels: &[Pixels]) -> Result<Vec<Vec<f32>>, String> {
        let mut clip = clip()?;
        loop {
            match clip.embed_images(pixels).await {
                Ok(e) => return Ok(e),
                Err(e) if on_gpu(&clip) => clip = fall_back(&clip, &e.to_string()).await?,
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn embed_texts(texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut clip = clip()?;
        loop {
            match clip.embed_texts(texts).await {
                Ok((_, e)) => return Ok(e),
                Err(e) if on_gpu(&clip) => clip = fall_back(&clip, &e.to_string()).await?,
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn clear_models() -> Result<(), String> {
        let caches = scope().caches().map_err(js_err)?;
        JsFuture::from(caches.delete(CACHE)).await.map_err(js_err)?;
        post(&Event::ModelsCleared);
        Ok(())
    }

    // ------------------------------------------------------------------ models from this computer

    async fn list_models() -> Result<(), String> {
        post(&Event::LocalModels { models: models::list().await? });
        Ok(())
    }

    async fn remove_model(key: String) -> Result<(), String> {
        if STATE.with(|s| s.borrow().base == format!("{LOCAL_PREFIX}{key}")) {
            // Let go of its collection file before deleting it.
            STATE.with(|s| {
                let mut s = s.borrow_mut();
                s.store = None;
                s.clip = None;
                s.base.clear();
            });
        }
        models::remove(&key).await?;
        let (collection, index) = collection_files(&key);
        opfs::remove(&collection).await;
        opfs::remove(&index).await;
        list_models().await
    }

    thread_local! {
        static IMPORT_STARTED: Cell<f64> = const { Cell::new(0.0) };
    }

    fn import_done(model: LocalModel, duplicate: bool) -> Event {
        let memory = wasm_bindgen::memory().unchecked_into::<js_sys::WebAssembly::Memory>();
        let wasm_memory = memory.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as u64;
        let seconds = (js_sys::Date::now() - IMPORT_STARTED.with(Cell::get)) / 1000.0;
        Event::ImportDone { model, duplicate, seconds, wasm_memory }
    }

    fn cancelled() -> bool {
        STATE.with(|s| s.borrow().cancel.get())
    }

    /// Progress at most every 100 ms, and always at the ends.
    struct Throttle(f64);
    impl Throttle {
        fn post(&mut self, stage: &str, done: u64, total: u64) {
            let now = js_sys::Date::now();
            if now - self.0 > 100.0 || done == 0 || done >= total {
                self.0 = now;
                post(&Event::ImportProgress { stage: stage.into(), done, total });
            }
        }
    }

    /// Adds a model from the dropped files: converts a checkpoint (lazily, a tensor at a time) or
    /// takes a converted model as it is, checks it, and stores it on this device.
    async fn import_model(files: Vec<File>, names: Vec<String>, dtype: String) -> Result<(), String> {
        let dtype = convert::Dtype::parse(&dtype).ok_or_else(|| format!("unknown dtype {dtype:?} (f32, f16, q8 or q4)"))?;
        STATE.with(|s| s.borrow_mut().pending = None);
        let (folder, source) = models::folder(files, &names)?;
        let mut throttle = Throttle(0.0);
        let layout = Layout::detect(&folder).map_err(|e| e.to_string())?;
        if layout == Layout::Converted {
            return import_converted(&folder, &source, &mut throttle).await;
        }
        // OpenCLIP checkpoints rarely ship a tokenizer: theirs is CLIP's BPE, the demo model's.
        let bundled = if layout == Layout::OpenClip && !folder.0.contains_key("tokenizer.json") {
            let cache = cache().await?;
            let bundled = small_file(&cache, "models/demo/tokenizer.json").await.map_err(|e| {
                format!("tokenizer.json is missing: this OpenCLIP checkpoint has none, and the app's CLIP tokenizer (models/demo/tokenizer.json) could not be read ({e}); add a CLIP tokenizer.json to the files")
            })?;
            Some(bundled)
        } else {
            None
        };
        throttle.post("read", 0, 1);
        let checkpoint = Checkpoint::open(&folder, bundled.as_deref()).map_err(|e| e.to_string())?;
        throttle.post("read", 1, 1);
        let license = checkpoint.license().unwrap_or_else(|| "unknown: check the source".into());
        // The manifest holds only what the files say (so its hash, the model's identity, is the
        // same whichever folder name the same checkpoint comes in); the name, the folder and the
        // templates chosen from the name live in local.json.
        let card = ModelCard { name: String::new(), domain: String::new(), license: license.clone(), templates: ModelCard::default().templates };
        let options = ConvertOptions { dtype, shard_bytes: 32_000_000, source: "added from this computer".into(), card };
        let mut converter = Converter::new(&checkpoint, options).map_err(|e| e.to_string())?;
        loop {
            let (done, total) = converter.progress();
            throttle.post("convert", done, total);
            if cancelled() {
                return Err("cancelled: nothing was kept".into());
            }
            if !converter.step().map_err(|e| e.to_string())? {
                break;
            }
            yield_now().await;
        }
        let converted = converter.finish().map_err(|e| e.to_string())?;
        let key = converted.manifest_sha256()[..16].to_string();
        if let Some(existing) = models::get(&key).await? {
            post(&import_done(existing, true));
            return list_models().await;
        }
        // Fidelity: the unconverted model first (then dropped), the converted one after.
        throttle.post("check", 0, 4);
        let original = Clip::from_checkpoint(&checkpoint, BackendChoice::Cpu).await.map_err(|e| e.to_string())?;
        throttle.post("check", 1, 4);
        let before = Probe::of(&original).await.map_err(|e| e.to_string())?;
        drop(original);
        drop(checkpoint);
        if cancelled() {
            return Err("cancelled: nothing was kept".into());
        }
        throttle.post("check", 2, 4);
        let loaded = converted.load(BackendChoice::Cpu).await.map_err(|e| format!("the converted model does not load: {e}"))?;
        throttle.post("check", 3, 4);
        let after = Probe::of(&loaded).await.map_err(|e| e.to_string())?;
        drop(loaded);
        throttle.post("check", 4, 4);
        let fidelity = Fidelity::compare(&before, &after);
        let report = FidelityReport {
            dtype_required: dtype.min_cosine(),
            image_min: fidelity.image_min,
            text_min: fidelity.text_min,
            agreement: fidelity.agreement,
        };
        let passes = fidelity.passes(dtype);
        post(&Event::ImportChecked { fidelity: report, passes });
        let templates = convert::known_templates(&source);
        // A checkpoint without a name of its own gets its key's first digits to tell it apart.
        let name = if source.ends_with("CLIP model") { format!("{source} {}", &key[..6]) } else { source.clone() };
        let model = LocalModel {
            key,
            name,
            source,
            dtype: dtype.name().into(),
            bytes: converted.manifest.total_bytes(),
            license,
            domain: String::new(),
            templates,
            fidelity: Some(report),
        };
        if !passes {
            STATE.with(|s| s.borrow_mut().pending = Some((model, converted)));
            return Ok(());
        }
        store_model(model, &converted, &mut throttle).await
    }

    async fn keep_import() -> Result<(), String> {
        let Some((model, converted)) = STATE.with(|s| s.borrow_mut().pending.take()) else {
            return Err("there is no converted model waiting".into());
        };
        if let Err(message) = store_model(model, &converted, &mut Throttle(0.0)).await {
            post(&Event::ImportFailed { message });
        }
        Ok(())
    }

    async fn store_model(model: LocalModel, converted: &Converted, throttle: &mut Throttle) -> Result<(), String> {
        let files = converted.files();
        throttle.post("store", 0, 1);
        models::store(&model, &files, |done, total| throttle.post("store", done, total)).await?;
        post(&import_done(model, false));
        list_models().await
    }

    /// A converted model (manifest, shards, tokenizer) is checked as the app loads it and stored
    /// as it is.
    async fn import_converted(folder: &model_wasm::checkpoint::Files, source: &str, throttle: &mut Throttle) -> Result<(), String> {
        let read = |name: &str| -> Result<Vec<u8>, String> {
            let file = folder.0.get(name).ok_or_else(|| format!("{name} is missing: manifest.json lists it as part of the model"))?;
            file.read_all().map_err(|e| e.to_string())
        };
        let manifest_bytes = read("manifest.json")?;
        let manifest_json = String::from_utf8(manifest_bytes.clone()).map_err(|_| "manifest.json is not UTF-8".to_string())?;
        let manifest = model_wasm::Manifest::from_json(&manifest_json).map_err(|e| e.to_string())?;
        let key = collection::hex(&Sha256::digest(&manifest_bytes))[..16].to_string();
        if let Some(existing) = models::get(&key).await? {
            post(&import_done(existing, true));
            return list_models().await;
        }
        let total = manifest.total_bytes();
        let mut shards = HashMap::new();
        let mut done = 0;
        for s in &manifest.shards {
            if cancelled() {
                return Err("cancelled: nothing was kept".into());
            }
            let bytes = read(&s.file)?;
            converted::check_shard(s, &bytes).map_err(|e| e.to_string())?;
            done += bytes.len() as u64;
            shards.insert(s.file.clone(), bytes);
            throttle.post("read", done, total);
            yield_now().await;
        }
        let tokenizer_json = read(&manifest.tokenizer)?;
        throttle.post("check", 0, 1);
        Clip::from_converted_parts(&manifest_json, &shards, &tokenizer_json, BackendChoice::Cpu).await.map_err(|e| e.to_string())?;
        throttle.post("check", 1, 1);
        let name = if manifest.card.name.is_empty() { manifest.source.clone() } else { manifest.card.name.clone() };
        let model = LocalModel {
            key,
            name: if name.is_empty() { source.to_string() } else { name },
            source: manifest.source.clone(),
            dtype: manifest.dtype.clone(),
            bytes: total,
            license: manifest.card.license.clone(),
            domain: manifest.card.domain.clone(),
            templates: manifest.card.templates.clone(),
            fidelity: None,
        };
        let mut files: Vec<(&str, &[u8])> = manifest.shards.iter().map(|s| (s.file.as_str(), shards[&s.file].as_slice())).collect();
        files.push((manifest.tokenizer.as_str(), &tokenizer_json));
        files.push(("manifest.json", &manifest_bytes));
        throttle.post("store", 0, 1);
        models::store(&model, &files, |d, t| throttle.post("store", d, t)).await?;
        post(&import_done(model, false));
        list_models().await
    }

    // ------------------------------------------------------------------ images

    fn clip() -> Result<Rc<Clip>, String> {
        STATE.with(|s| s.borrow().clip.clone()).ok_or_else(|| "the model is not loaded yet".to_string())
    }

    /// Lets queued messages (Cancel, searches) run between batches.
    async fn yield_now() {
        let p = Promise::new(&mut |resolve, _| {
            let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
        });
        let _ = JsFuture::from(p).await;
    }

    /// Moves fresh rows into the index's graph (and rebuilds it past its tombstone bound) one
    /// bounded step at a time, yielding to the event loop between steps, so that a search that
    /// arrives meanwhile waits for one step (a few tens of milliseconds at most), never for the
    /// whole build. One runs at a time; later calls join it. (The index is saved where it was
    /// before: after an add or an import, pending work and all; a restored index resumes it.)
    fn compact_in_background() {
        if STATE.with(|s| s.borrow().compacting.replace(true)) {
            return;
        }
        wasm_bindgen_futures::spawn_local(async {
            loop {
                let pending = STATE.with(|s| s.borrow_mut().index.as_mut().is_some_and(|ix| ix.compact().pending));
                if !pending {
                    break;
                }
                yield_now().await;
            }
            STATE.with(|s| s.borrow().compacting.set(false));
        });
    }

    async fn read(file: &File) -> Result<Vec<u8>, String> {
        let buf = JsFuture::from(file.array_buffer()).await.map_err(js_err)?;
        Ok(Uint8Array::new(&buf).to_vec())
    }

    struct Prepared {
        name: String,
        pixels: Pixels,
        thumb: Vec<u8>,
    }

    /// Reads, checks and preprocesses one file; `Err` is the reason it is skipped.
    async fn prepare(clip: &Clip, file: &File, name: &str) -> Result<(Prepared, [u8; 32]), String> {
        let size = file.size() as u64;
        if size == 0 {
            return Err("empty file (0 bytes)".into());
        }
        if size > MAX_FILE_BYTES {
            return Err(format!("file too large ({}; the limit is {})", app::human_bytes(size), app::human_bytes(MAX_FILE_BYTES)));
        }
        let bytes = read(file).await?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(first) = STATE.with(|s| s.borrow().hashes.get(&hash).cloned()) {
            return Err(format!("duplicate of {first}"));
        }
        let img = preprocess::decode(&bytes, name, Exif::Apply).map_err(|e| {
            // The list already shows the name.
            let e = e.to_string();
            e.strip_prefix(&format!("image {name}: ")).map(str::to_string).unwrap_or(e)
        })?;
        let pixels = preprocess::preprocess(&img, &clip.preprocess);
        Ok((Prepared { name: name.to_string(), pixels, thumb: collection::thumbnail(&img)? }, hash))
    }

    /// Gives an embedded image its id, indexes it and returns its stored form.
    fn index_item(name: String, hash: [u8; 32], thumb: Vec<u8>, embedding: Vec<f32>, origin: Option<Origin>) -> collection::Item {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let id = s.next_id;
            s.next_id += 1;
            if let Some(Err(e)) = s.index.as_mut().map(|ix| ix.insert(id, &embedding)) {
                web_sys::console::error_1(&format!("index insert: {e}").into());
            }
            s.hashes.insert(hash, name.clone());
            s.items.insert(id, Entry { hash, embedding: embedding.clone() });
            collection::Item { id, hash, name, thumb, embedding, origin }
        })
    }

    /// Saves, then shows, a batch of new images.
    fn commit(items: &[collection::Item]) {
        let mut bytes = Vec::new();
        for item in items {
            collection::add_record(item, &mut bytes);
        }
        persist(&bytes);
        send_items(items, false);
        compact_in_background();
    }

    async fn add(files: Vec<File>, names: Vec<String>) -> Result<(), String> {
        let clip = clip()?;
        if STATE.with(|s| s.borrow().adding.replace(true)) {
            return Err("images are already being added: wait or cancel".into());
        }
        STATE.with(|s| s.borrow().cancel.set(false));
        let started = js_sys::Date::now();
        let names: Vec<String> =
            files.iter().enumerate().map(|(i, f)| names.get(i).cloned().unwrap_or_else(|| f.name())).collect();
        let (files, names, slides) = split_slides(files, names);
        let total = files.len();
        let (mut added, mut skipped, mut done) = (0, 0, 0);
        let mut cancelled = false;
        let mut batch: Vec<(Prepared, [u8; 32])> = Vec::new();
        let mut i = 0;
        while i < total || !batch.is_empty() {
            if STATE.with(|s| s.borrow().cancel.get()) {
                cancelled = true;
                break;
            }
            // Fill a batch (skipping bad files as they come), then embed it.
            while batch.len() < BATCH && i < total {
                let name = &names[i];
                match prepare(&clip, &files[i], name).await {
                    Ok((p, hash)) => {
                        // Claim the hash now so a duplicate within the batch is caught too.
                        STATE.with(|s| s.borrow_mut().hashes.insert(hash, name.clone()));
                        batch.push((p, hash));
                    }
                    Err(reason) => {
                        skipped += 1;
                        done += 1;
                        post(&Event::Skipped { name: name.clone(), reason });
                    }
                }
                i += 1;
            }
            if batch.is_empty() {
                continue;
            }
            let pixels: Vec<Pixels> = batch.iter().map(|(p, _)| p.pixels.clone()).collect();
            let embeddings = match embed_images(&pixels).await {
                Ok(e) => e,
                Err(e) => {
                    // The encoder failed on the CPU too: report and stop, keeping what is indexed.
                    for (p, hash) in batch.drain(..) {
                        STATE.with(|s| s.borrow_mut().hashes.remove(&hash));
                        post(&Event::Skipped { name: p.name, reason: format!("encoder failed: {e}") });
                    }
                    break;
                }
            };
            let items: Vec<collection::Item> = batch
                .drain(..)
                .zip(embeddings)
                .map(|((p, hash), embedding)| index_item(p.name, hash, p.thumb, embedding, None))
                .collect();
            added += items.len();
            done += items.len();
            commit(&items);
            let secs = (js_sys::Date::now() - started) / 1000.0;
            post(&Event::Indexing { done, total, per_second: added as f64 / secs.max(1e-3) });
            yield_now().await;
        }
        // The skipped list shows the name already.
        let reason_of = |name: &str, e: String| e.strip_prefix(&format!("slide {name}: ")).map(str::to_string).unwrap_or(e);
        for (name, opened) in slides {
            if cancelled || STATE.with(|s| s.borrow().cancel.get()) {
                cancelled = true;
                break;
            }
            match opened {
                Ok(slide) => match add_slide(&clip, &slide).await {
                    Ok((n, stopped)) => {
                        added += n;
                        cancelled |= stopped;
                    }
                    Err(reason) => {
                        skipped += 1;
                        let reason = reason_of(&name, reason);
                        post(&Event::Skipped { name, reason });
                    }
                },
                Err(reason) => {
                    skipped += 1;
                    let reason = reason_of(&name, reason);
                    post(&Event::Skipped { name, reason });
                }
            }
        }
        STATE.with(|s| s.borrow().adding.set(false));
        save_index().await;
        let seconds = (js_sys::Date::now() - started) / 1000.0;
        post(&Event::Finished { added, skipped, cancelled, seconds });
        Ok(())
    }

    // ------------------------------------------------------------------ slides

    /// Extensions that are whole-slide formats (read, or refused by name): never decoded as images.
    const SLIDE_EXTENSIONS: [&str; 12] = ["svs", "ndpi", "mrxs", "isyntax", "czi", "vsi", "scn", "bif", "vms", "vmu", "dcm", "qptiff"];
    /// A TIFF is a slide when it is tiled and pyramidal, or this large.
    const SLIDE_PIXELS: u64 = 64 << 20;

    fn extension(name: &str) -> String {
        name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
    }

    /// A slide opened (lazily: directories only) or the reason it cannot be.
    type Opened = Result<Slide, String>;

    /// Separates slides from images. `.dcm` files are grouped by folder into one DICOM series;
    /// a TIFF is a slide when it is a tiled pyramid (or very large), else an image.
    fn split_slides(files: Vec<File>, names: Vec<String>) -> (Vec<File>, Vec<String>, Vec<(String, Opened)>) {
        let (mut images, mut image_names, mut slides) = (Vec::new(), Vec::new(), Vec::new());
        let mut dicom: BTreeMap<String, Vec<Rc<dyn model_wasm::Source>>> = BTreeMap::new();
        let source = |file: File, name: &str| app::models::WebFile::source(file, name.to_string());
        for (file, name) in files.into_iter().zip(names) {
            let ext = extension(&name);
            if ext == "dcm" {
                // One series per folder; files chosen without a folder form one series together.
                let folder = name.rsplit_once('/').map_or_else(String::new, |(d, _)| d.to_string());
                match source(file, &name) {
                    Ok(s) => dicom.entry(folder).or_default().push(s),
                    Err(e) => slides.push((name, Err(e))),
                }
            } else if SLIDE_EXTENSIONS.contains(&ext.as_str()) {
                let opened = source(file, &name).and_then(|s| Slide::open(&name, s).map_err(|e| e.to_string()));
                slides.push((name, opened));
            } else if ext == "tif" || ext == "tiff" {
                let opened = match source(file.clone(), &name) {
                    Ok(s) => Slide::open(&name, s),
                    Err(e) => Err(model_wasm::Error::Input(e)),
                };
                let opened_message = opened.as_ref().err().map(ToString::to_string);
                match opened {
                    Ok(sl) if sl.levels.len() > 1 || sl.width() as u64 * sl.height() as u64 > SLIDE_PIXELS => slides.push((name, Ok(sl))),
                    // A slide format built on TIFF, refused by name. Anything else (a grey or
                    // 16-bit TIFF, a plain stripped one) goes to the image decoder.
                    Err(model_wasm::Error::Slide { problem: slide::Problem::Refused { format, .. }, .. })
                        if slide::TIFF_SLIDE_FORMATS.contains(&format) =>
                    {
                        slides.push((name.clone(), Err(opened_message.unwrap_or_default())))
                    }
                    _ => {
                        images.push(file);
                        image_names.push(name);
                    }
                }
            } else {
                images.push(file);
                image_names.push(name);
            }
        }
        for (folder, files) in dicom {
            let label = if folder.is_empty() { files[0].name().to_string() } else { folder };
            slides.push((label.clone(), Slide::open_dicom(&label, files).map_err(|e| e.to_string())));
        }
        (images, image_names, slides)
    }

    /// Tiles a slide over its tissue and embeds every patch, in batches, with progress; patches
    /// already in the collection (the same slide dropped again, e.g. after a reload cut an
    /// earlier run short) are skipped before they are read, so a second drop resumes.
    /// Returns (patches added, cancelled).
    async fn add_slide(clip: &Rc<Clip>, slide: &Slide) -> Result<(usize, bool), String> {
        let started = js_sys::Date::now();
        let options = TilingOptions { patch: clip.input_size(), ..TilingOptions::default() };
        let (_, mask, plan) = slide::prepare(slide, &options).map_err(|e| e.to_string())?;
        let total = plan.patches.len();
        post(&Event::SlideOpened {
            name: slide.name.clone(),
            format: slide.format.name().to_string(),
            width: slide.width(),
            height: slide.height(),
            mpp: plan.mpp,
            target_mpp: options.target_mpp,
            level: plan.level,
            patches: total,
            tissue: mask.coverage(),
            associated: slide.associated.iter().map(|a| a.kind.to_string()).collect(),
        });
        let fp = slide.fingerprint().map_err(|e| e.to_string())?;
        let (mut added, mut done) = (0, 0);
        let mut unreadable = 0;
        let mut first_error: Option<String> = None;
        for chunk in plan.patches.chunks(BATCH) {
            if STATE.with(|s| s.borrow().cancel.get()) {
                return Ok((added, true));
            }
            let mut batch = Vec::new();
            for p in chunk {
                let hash = slide::patch_hash(&fp, p);
                if STATE.with(|s| s.borrow().hashes.contains_key(&hash)) {
                    continue;
                }
                // A damaged tile loses the patches on it, not the slide.
                let rgb = match plan.read(slide, p) {
                    Ok(rgb) => rgb,
                    Err(e) => {
                        unreadable += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        continue;
                    }
                };
                let name = format!("{} ({}, {})", slide.name, p.x, p.y);
                let origin = Origin { slide: slide.name.clone(), x: p.x, y: p.y, size: p.size };
                batch.push((name, hash, collection::thumbnail(&rgb)?, clip.pixels_of(&rgb), origin));
            }
            done += chunk.len();
            if !batch.is_empty() {
                let pixels: Vec<Pixels> = batch.iter().map(|b| b.3.clone()).collect();
                let embeddings = embed_images(&pixels).await?;
                let items: Vec<collection::Item> = batch
                    .into_iter()
                    .zip(embeddings)
                    .map(|((name, hash, thumb, _, origin), e)| index_item(name, hash, thumb, e, Some(origin)))
                    .collect();
                added += items.len();
                commit(&items);
            }
            let secs = (js_sys::Date::now() - started) / 1000.0;
            post(&Event::Indexing { done, total, per_second: done as f64 / secs.max(1e-3) });
            yield_now().await;
        }
        if let Some(e) = first_error {
            let e = e.strip_prefix(&format!("slide {}: ", slide.name)).map(str::to_string).unwrap_or(e);
            post(&Event::Skipped {
                name: slide.name.clone(),
                reason: format!("{unreadable} of {total} patches could not be read, the others were added ({e})"),
            });
        }
        Ok((added, false))
    }

    fn busy() -> Result<(), String> {
        if STATE.with(|s| s.borrow().adding.get()) {
            return Err("images are being added: wait for the end or cancel first".into());
        }
        Ok(())
    }

    async fn remove(ids: Vec<u64>) -> Result<(), String> {
        busy()?;
        let mut bytes = Vec::new();
        let removed: Vec<u64> = STATE.with(|s| {
            let mut s = s.borrow_mut();
            let mut removed = Vec::new();
            for id in ids {
                if let Some(entry) = s.items.remove(&id) {
                    s.hashes.remove(&entry.hash);
                    if let Some(ix) = s.index.as_mut() {
                        ix.remove(id);
                    }
                    collection::remove_record(id, &mut bytes);
                    removed.push(id);
                }
            }
            removed
        });
        persist(&bytes);
        post(&Event::Removed { ids: removed });
        save_index().await;
        Ok(())
    }

    async fn clear_collection() -> Result<(), String> {
        busy()?;
        let header = header()?;
        let (_, index_name) = file_names(&header);
        let ids: Vec<u64> = STATE.with(|s| {
            let mut s = s.borrow_mut();
            let ids = s.items.keys().copied().collect();
            s.items.clear();
            s.hashes.clear();
            s.index = Index::new(header.dim).ok();
            if let Some(Err(e)) = s.store.as_mut().map(|f| f.replace(&collection::header_bytes(&header))) {
                web_sys::console::error_1(&format!("clearing the stored collection: {e}").into());
            }
            ids
        });
        opfs::remove(&index_name).await;
        post(&Event::Removed { ids });
        Ok(())
    }

    async fn export() -> Result<(), String> {
        busy()?;
        let header = header()?;
        let stored = STATE
            .with(|s| s.borrow().store.as_ref().map(|f| f.read_all()))
            .ok_or("this browser's storage is not open")??;
        let parsed = collection::parse(&stored).map_err(|e| e.to_string())?;
        let items: Vec<&collection::Item> = parsed.items.iter().collect();
        let bytes = collection::write(&header, &items);
        let file_name = format!("obscura-{}-{}-images.obscura", header.model.replace('/', "-"), items.len());
        post_with(&Event::Exported { file_name, count: items.len() }, Some(&Uint8Array::from(&bytes[..])));
        Ok(())
    }

    async fn import(files: Vec<File>, name: String) -> Result<(), String> {
        busy()?;
        let header = header()?;
        let file = files.first().ok_or("no collection file was sent")?;
        let bytes = read(file).await?;
        let parsed = collection::parse_whole(&bytes).map_err(|e| format!("{name}: {e}"))?;
        if parsed.header.manifest_sha256 != header.manifest_sha256 {
            return Err(format!(
                "{name} was made with another model ({}, manifest {}…); load that model to import it, so that embeddings of different models never mix",
                parsed.header.model,
                &parsed.header.manifest_sha256[..parsed.header.manifest_sha256.len().min(12)]
            ));
        }
        let (mut added, mut duplicates) = (0, 0);
        for chunk in parsed.items.chunks(256) {
            let mut fresh = Vec::new();
            for item in chunk {
                if STATE.with(|s| s.borrow().hashes.contains_key(&item.hash)) {
                    duplicates += 1;
                    continue;
                }
                fresh.push(index_item(item.name.clone(), item.hash, item.thumb.clone(), item.embedding.clone(), item.origin.clone()));
            }
            added += fresh.len();
            commit(&fresh);
            yield_now().await;
        }
        compact_in_background();
        save_index().await;
        post(&Event::Imported { name, added, duplicates });
        Ok(())
    }

    async fn classify(labels: Vec<String>, template: Option<String>) -> Result<(), String> {
        if labels.len() < 2 {
            return Err("type at least two labels, one per line".into());
        }
        let prompts: Vec<String> = labels.iter().map(|l| app::apply_template(template.as_deref(), l)).collect();
        let mut texts = Vec::new();
        for chunk in prompts.chunks(16) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            texts.extend(embed_texts(&refs).await?);
        }
        let scale = clip()?.logit_scale();
        let rows: Vec<Classification> = STATE.with(|s| {
            s.borrow()
                .items
                .iter()
                .map(|(&id, e)| {
                    let (label, probs) = app::zero_shot(&e.embedding, &texts, scale);
                    Classification { id, label, confidence: probs[label], probs }
                })
                .collect()
        });
        post(&Event::Classified { labels, rows });
        Ok(())
    }

    // ------------------------------------------------------------------ search

    fn search(query: Query, vector: &[f32], limit: usize, exclude: Option<u64>) -> Result<(), String> {
        let hits = STATE.with(|s| {
            let s = s.borrow();
            let Some(ix) = s.index.as_ref() else { return Ok(Vec::new()) };
            ix.search(vector, limit + usize::from(exclude.is_some())).map_err(|e| e.to_string())
        })?;
        let hits: Vec<Hit> =
            hits.into_iter().filter(|h| Some(h.id) != exclude).take(limit).map(|h| Hit { id: h.id, score: h.score }).collect();
        post(&Event::Results { query, hits });
        Ok(())
    }

    async fn search_text(text: String, limit: usize) -> Result<(), String> {
        let emb = embed_texts(&[text.as_str()]).await?;
        search(Query::Text { text }, &emb[0], limit, None)
    }

    fn similar(id: u64, limit: usize) -> Result<(), String> {
        let vector = STATE
            .with(|s| s.borrow().items.get(&id).map(|e| e.embedding.clone()))
            .ok_or_else(|| format!("no image with id {id}"))?;
        search(Query::Similar { id }, &vector, limit, Some(id))
    }

    async fn query_image(files: Vec<File>, name: String, limit: usize) -> Result<(), String> {
        let clip = clip()?;
        let file = files.first().ok_or("no query image was sent")?;
        let bytes = read(file).await?;
        let pixels = clip.pixels(&bytes, &name, Exif::Apply).map_err(|e| format!("{name}: {e}"))?;
        let emb = embed_images(&[pixels]).await?;
        search(Query::Image { name }, &emb[0], limit, None)
    }
}
