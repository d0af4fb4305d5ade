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
    use std::collections::HashMap;
    use std::rc::Rc;

    use app::{Backend, Event, Hit, MAX_FILE_BYTES, Query, Request};
    use index::Index;
    use js_sys::{Array, Promise, Uint8Array};
    use model_wasm::{BackendChoice, BackendKind, Clip, ConvertedFiles, Exif, Pixels, converted, preprocess};
    use sha2::{Digest, Sha256};
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::{JsFuture, spawn_local};
    use web_sys::{DedicatedWorkerGlobalScope, File, MessageEvent, Response};

    /// Cache API bucket for model files. Bump when the cached layout changes.
    const CACHE: &str = "obscura-models-v1";
    /// Images per encoder call: large enough to keep the GPU busy, small enough for steady progress.
    const BATCH: usize = 8;
    const THUMB: u32 = 160;

    #[derive(Default)]
    struct State {
        clip: Option<Rc<Clip>>,
        index: Option<Index>,
        /// Each indexed image's embedding (image → image search starts from it).
        items: HashMap<u64, Vec<f32>>,
        hashes: HashMap<[u8; 32], String>,
        next_id: u64,
        cancel: Cell<bool>,
        adding: Cell<bool>,
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
            Request::Load { base } => {
                if let Err(message) = load(&base).await {
                    post(&Event::ModelFailed { base, message });
                }
                Ok(())
            }
            Request::Add { names } => add(files, names).await,
            Request::Search { text, limit } => search_text(text, limit).await,
            Request::Similar { id, limit } => similar(id, limit),
            Request::QueryImage { name, limit } => query_image(files, name, limit).await,
            Request::ClearModels => clear_models().await,
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

    async fn load(base: &str) -> Result<(), String> {
        let started = js_sys::Date::now();
        let base = base.trim_end_matches('/');
        let cache = cache().await?;
        let manifest_json = String::from_utf8(small_file(&cache, &format!("{base}/manifest.json")).await?)
            .map_err(|_| format!("{base}/manifest.json is not UTF-8"))?;
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

        let clip = Clip::from_converted(ConvertedFiles { manifest_json, tokenizer_json, shards }, BackendChoice::Auto)
            .await
            .map_err(|e| e.to_string())?;
        let info = clip.backend().clone();
        let (backend, detail) = match info.kind {
            BackendKind::Wgpu => {
                // Browsers often hide the adapter's name: wgpu then reports " (BrowserWebGpu)".
                let name = info.adapter.unwrap_or_default();
                let name = name.trim();
                (Backend::Webgpu, if name.is_empty() || name.starts_with('(') { "WebGPU".into() } else { name.to_string() })
            }
            _ => (Backend::Cpu, info.fallback_reason.unwrap_or_else(|| "CPU backend".into())),
        };
        let dim = clip.config.projection_dim;
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            // A different model means different embeddings: never mix them in one index.
            s.index = Some(Index::new(dim).expect("a positive dimension"));
            s.items.clear();
            s.hashes.clear();
            s.clip = Some(Rc::new(clip));
        });
        post(&Event::ModelReady { base: base.to_string(), backend, detail, dim, millis: js_sys::Date::now() - started });
        Ok(())
    }

    async fn clear_models() -> Result<(), String> {
        let caches = scope().caches().map_err(js_err)?;
        JsFuture::from(caches.delete(CACHE)).await.map_err(js_err)?;
        post(&Event::ModelsCleared);
        Ok(())
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

    async fn read(file: &File) -> Result<Vec<u8>, String> {
        let buf = JsFuture::from(file.array_buffer()).await.map_err(js_err)?;
        Ok(Uint8Array::new(&buf).to_vec())
    }

    fn thumbnail(img: &preprocess::Rgb8) -> Result<Vec<u8>, String> {
        let scale = THUMB as f64 / img.width.max(img.height) as f64;
        let small = if scale < 1.0 {
            let (w, h) = (((img.width as f64 * scale).round() as u32).max(1), ((img.height as f64 * scale).round() as u32).max(1));
            preprocess::resize(img, w, h, preprocess::Resample::Bilinear)
        } else {
            img.clone()
        };
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82)
            .encode(&small.data, small.width, small.height, image::ExtendedColorType::Rgb8)
            .map_err(|e| e.to_string())?;
        Ok(out)
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
        let img = preprocess::decode(&bytes, name, Exif::Apply).map_err(|e| e.to_string())?;
        let pixels = preprocess::preprocess(&img, &clip.preprocess);
        Ok((Prepared { name: name.to_string(), pixels, thumb: thumbnail(&img)? }, hash))
    }

    async fn add(files: Vec<File>, names: Vec<String>) -> Result<(), String> {
        let clip = clip()?;
        if STATE.with(|s| s.borrow().adding.replace(true)) {
            return Err("images are already being added: wait or cancel".into());
        }
        STATE.with(|s| s.borrow().cancel.set(false));
        let started = js_sys::Date::now();
        let total = files.len();
        let (mut added, mut skipped, mut done) = (0, 0, 0);
        let mut cancelled = false;
        let mut batch: Vec<(Prepared, [u8; 32])> = Vec::new();
        let names: Vec<String> =
            files.iter().enumerate().map(|(i, f)| names.get(i).cloned().unwrap_or_else(|| f.name())).collect();
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
            let embeddings = match clip.embed_images(&pixels).await {
                Ok(e) => e,
                Err(e) => {
                    // The encoder failed as a whole (e.g. a lost GPU device): report and stop,
                    // keeping what is indexed.
                    for (p, hash) in batch.drain(..) {
                        STATE.with(|s| s.borrow_mut().hashes.remove(&hash));
                        post(&Event::Skipped { name: p.name, reason: format!("encoder failed: {e}") });
                    }
                    break;
                }
            };
            for ((p, _), embedding) in batch.drain(..).zip(embeddings) {
                let id = STATE.with(|s| {
                    let mut s = s.borrow_mut();
                    let id = s.next_id;
                    s.next_id += 1;
                    let inserted = s.index.as_mut().map(|ix| ix.insert(id, &embedding));
                    if let Some(Err(e)) = inserted {
                        web_sys::console::error_1(&format!("index insert: {e}").into());
                    }
                    s.items.insert(id, embedding);
                    id
                });
                let thumb = Uint8Array::from(&p.thumb[..]);
                post_with(&Event::Added { id, name: p.name }, Some(&thumb));
                added += 1;
                done += 1;
            }
            STATE.with(|s| {
                if let Some(ix) = s.borrow_mut().index.as_mut() {
                    ix.compact(); // bounded work: at most one graph build step
                }
            });
            let secs = (js_sys::Date::now() - started) / 1000.0;
            post(&Event::Indexing { done, total, per_second: added as f64 / secs.max(1e-3) });
            yield_now().await;
        }
        STATE.with(|s| s.borrow().adding.set(false));
        let seconds = (js_sys::Date::now() - started) / 1000.0;
        post(&Event::Finished { added, skipped, cancelled, seconds });
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
        let clip = clip()?;
        let (_, emb) = clip.embed_texts(&[text.as_str()]).await.map_err(|e| e.to_string())?;
        search(Query::Text { text }, &emb[0], limit, None)
    }

    fn similar(id: u64, limit: usize) -> Result<(), String> {
        let vector = STATE
            .with(|s| s.borrow().items.get(&id).cloned())
            .ok_or_else(|| format!("no image with id {id}"))?;
        search(Query::Similar { id }, &vector, limit, Some(id))
    }

    async fn query_image(files: Vec<File>, name: String, limit: usize) -> Result<(), String> {
        let clip = clip()?;
        let file = files.first().ok_or("no query image was sent")?;
        let bytes = read(file).await?;
        let pixels = clip.pixels(&bytes, &name, Exif::Apply).map_err(|e| format!("{name}: {e}"))?;
        let emb = clip.embed_images(&[pixels]).await.map_err(|e| e.to_string())?;
        search(Query::Image { name }, &emb[0], limit, None)
    }
}
