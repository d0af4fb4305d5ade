//! Which worker runs the model. Two builds of the same worker: the WebGPU build (which falls back
//! to one CPU thread inside) and the threaded CPU build (nightly, wasm atomics, a rayon pool of
//! web workers; no wgpu: it does not build with atomics). The threaded one needs shared memory,
//! so a cross-origin-isolated page (COOP/COEP headers, from the host or from the app's service
//! worker) and a browser that validates a shared-memory module.

use js_sys::Reflect;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use web_sys::{Worker, WorkerOptions, WorkerType};

/// A worker, and whether it is the threaded CPU build.
pub struct Spawned {
    pub worker: Worker,
    pub threaded: bool,
}

/// The WebGPU build unless the GPU is ruled out (`cpu_only`: no adapter, or it failed); else the
/// threaded CPU build where it can run and has not failed here (`threads`); else the WebGPU
/// build on its one-thread CPU path.
pub fn new_worker(cpu_only: bool, threads: bool) -> Spawned {
    if cpu_only
        && threads
        && let Some(worker) = threaded_worker()
    {
        return Spawned { worker, threaded: true };
    }
    Spawned { worker: Worker::new("./worker_loader.js").expect("the worker script is part of the app"), threaded: false }
}

/// Tells the app's service worker (app/sw/sw.js) which worker build this page runs, so that it
/// keeps that build's files for the next visit and for offline use (and not the other's). Called
/// once the worker is up: its own download of the same files is over by then (two downloads of
/// one large file at once can fail in Chromium's HTTP cache).
pub fn keep_offline(threaded: bool) {
    let build = if threaded { "threads" } else { "gpu" };
    let Some(window) = web_sys::window() else { return };
    let Ok(container) = Reflect::get(&window.navigator(), &"serviceWorker".into()) else { return };
    let Some(ready) = Reflect::get(&container, &"ready".into()).ok().and_then(|r| r.dyn_into::<js_sys::Promise>().ok()) else { return };
    wasm_bindgen_futures::spawn_local(async move {
        let Ok(registration) = wasm_bindgen_futures::JsFuture::from(ready).await else { return };
        let active = Reflect::get(&registration, &"active".into()).unwrap_or(JsValue::NULL);
        let post = Reflect::get(&active, &"postMessage".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        if let Some(post) = post {
            let message = js_sys::Object::new();
            let _ = Reflect::set(&message, &"keep".into(), &build.into());
            let _ = post.call1(&active, &message);
        }
    });
}

fn threaded_worker() -> Option<Worker> {
    if !threads_ok() {
        return None;
    }
    let url = threaded_loader()?;
    let options = WorkerOptions::new();
    options.set_type(WorkerType::Module);
    Worker::new_with_options(&url, &options).ok()
}

/// Whether the browser gives this page a WebGPU adapter (`navigator.gpu` alone does not say:
/// a browser can have the API and no adapter, e.g. with its GPU blocklisted).
pub async fn gpu_adapter() -> bool {
    let Some(window) = web_sys::window() else { return false };
    let Ok(gpu) = Reflect::get(&window.navigator(), &"gpu".into()) else { return false };
    let Some(request) = Reflect::get(&gpu, &"requestAdapter".into()).ok().and_then(|f| f.dyn_into::<js_sys::Function>().ok()) else {
        return false;
    };
    let Some(promise) = request.call0(&gpu).ok().and_then(|p| p.dyn_into::<js_sys::Promise>().ok()) else { return false };
    wasm_bindgen_futures::JsFuture::from(promise).await.is_ok_and(|adapter| !adapter.is_null() && !adapter.is_undefined())
}

/// Shared memory between threads: the page is cross-origin isolated, and the browser validates
/// a module whose memory is shared (the wasm threads proposal).
fn threads_ok() -> bool {
    let Some(window) = web_sys::window() else { return false };
    let isolated = Reflect::get(&window, &"crossOriginIsolated".into()).is_ok_and(|v| v.is_truthy());
    // \0asm, version 1, a memory section with one shared memory of 1..1 pages.
    const SHARED_MEMORY: [u8; 14] = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 5, 4, 1, 3, 1, 1];
    isolated && js_sys::WebAssembly::validate(&js_sys::Uint8Array::from(&SHARED_MEMORY[..]).into()).unwrap_or(false)
}

/// The threaded build's loader, named in the page by the build (`scripts/threads.sh`), with the
/// page's `?threads=N` passed on (the pool's size; by default one thread per logical core).
fn threaded_loader() -> Option<String> {
    let document = web_sys::window()?.document()?;
    let meta = document.query_selector(r#"meta[name="obscura-threads"]"#).ok()??;
    let url = meta.get_attribute("content").filter(|u| !u.is_empty())?;
    let search = web_sys::Url::new(&document.url().ok()?).ok()?.search_params();
    Some(match search.get("threads") {
        Some(n) if n.parse::<u32>().is_ok_and(|n| n > 0) => format!("{url}?threads={n}"),
        _ => url,
    })
}
