//! The model: its files (fetched, verified, kept in the Cache API), loading it, and the
//! encoders, falling back from the GPU when it fails.

use std::collections::HashMap;
use std::rc::Rc;

use app::collection;
use app::models;
use app::{Backend, Event, LOCAL_PREFIX};
use js_sys::Uint8Array;
use model_wasm::{BackendChoice, BackendKind, Clip, ConvertedFiles, Pixels, Precision, converted};
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::Response;

use crate::state::{STATE, clip, header, js_err, post, scope};
use crate::store::restore;

// ------------------------------------------------------------------ model files

/// Cache API bucket for model files. Bump when the cached layout changes.
const CACHE: &str = "obscura-models-v1";

pub(crate) async fn cache() -> Result<web_sys::Cache, String> {
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
/// cache when the request fails; the cache first when the browser says it is offline (no
/// request at all then).
pub(crate) async fn small_file(cache: &web_sys::Cache, url: &str) -> Result<Vec<u8>, String> {
    if !scope().navigator().on_line()
        && let Some(bytes) = cached(cache, url).await
    {
        return Ok(bytes);
    }
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
    // A copy outside the wasm memory: a Response takes no view of a shared (threaded) memory.
    let copy = Uint8Array::from(bytes);
    if let Ok(resp) = Response::new_with_opt_buffer_source(Some(&copy)) {
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
        _ => (Backend::Cpu, cpu_detail(info.fallback_reason.as_deref())),
    }
}

/// The CPU path's detail: its thread count first (the badge shows up to the first " ("), then
/// why it is not on the GPU. The one-thread build says why not more: the page is not
/// cross-origin isolated (no shared memory), or the threaded build is not in use here.
pub(crate) fn cpu_detail(reason: Option<&str>) -> String {
    let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
    if cfg!(feature = "threads") {
        let n = cpu_threads();
        return format!("{n} thread{}{why}", if n == 1 { "" } else { "s" });
    }
    let isolated = js_sys::Reflect::get(&js_sys::global(), &"crossOriginIsolated".into()).is_ok_and(|v| v.is_truthy());
    let limit = if isolated { "threaded build not in use" } else { "page not cross-origin isolated" };
    format!("1 thread · {limit}{why}")
}

/// Threads the CPU encoder runs on: the rayon pool the loader started (threaded build), else 1.
pub(crate) fn cpu_threads() -> usize {
    #[cfg(feature = "threads")]
    return rayon::current_num_threads();
    #[cfg(not(feature = "threads"))]
    1
}

pub(crate) async fn load(base: &str, cpu: Option<String>) -> Result<(), String> {
    let started = js_sys::Date::now();
    let base = base.trim_end_matches('/');
    // Let go of the previous model's collection file before opening another.
    STATE.with(|s| s.borrow_mut().store = None);
    let choice = if cpu.is_some() { BackendChoice::Cpu } else { BackendChoice::Auto };
    let (clip, manifest_sha256) = fetch_model(base, choice).await?;
    let (backend, mut detail) = describe(&clip);
    if let Some(reason) = cpu {
        detail = if backend == Backend::Cpu { cpu_detail(Some(&reason)) } else { reason };
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

/// The GPU failed: reload the model from the cached files, keeping the collection, and say
/// so. f16 compute steps down to f32 on the same GPU (an activation can overflow f16, or a
/// driver's f16 kernels can be broken); f32 on the GPU (e.g. the device was lost) to the CPU.
async fn fall_back(from: &Clip, error: &str) -> Result<Rc<Clip>, String> {
    let (choice, backend, detail) = if from.backend().precision == Precision::F16 {
        (BackendChoice::WgpuF32, Backend::Webgpu, format!("f16 compute failed ({error}), now f32 compute"))
    } else {
        (BackendChoice::Cpu, Backend::Cpu, cpu_detail(Some(&format!("the GPU failed: {error}"))))
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

pub(crate) async fn embed_images(pixels: &[Pixels]) -> Result<Vec<Vec<f32>>, String> {
    let mut clip = clip()?;
    loop {
        match clip.embed_images(pixels).await {
            Ok(e) => return Ok(e),
            Err(e) if on_gpu(&clip) => clip = fall_back(&clip, &e.to_string()).await?,
            Err(e) => return Err(e.to_string()),
        }
    }
}

pub(crate) async fn embed_texts(texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
    let mut clip = clip()?;
    loop {
        match clip.embed_texts(texts).await {
            Ok((_, e)) => return Ok(e),
            Err(e) if on_gpu(&clip) => clip = fall_back(&clip, &e.to_string()).await?,
            Err(e) => return Err(e.to_string()),
        }
    }
}

pub(crate) async fn clear_models() -> Result<(), String> {
    let caches = scope().caches().map_err(js_err)?;
    JsFuture::from(caches.delete(CACHE)).await.map_err(js_err)?;
    post(&Event::ModelsCleared);
    Ok(())
}
