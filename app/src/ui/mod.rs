//! The page: one module per view, all reading the shared [`state::Ctx`]; worker events arrive in
//! [`events`]. Views: the model picker ([`model_panel`]), adding images and slides ([`add`]),
//! search and its results ([`search`]), the collection and the viewer ([`gallery`]),
//! zero-shot classification ([`classify`]) and the teaching lab ([`lab`]).

mod add;
mod classify;
mod events;
mod files;
mod gallery;
mod lab;
mod model_panel;
mod search;
mod spawn;
mod state;

use app::{Backend, Catalog, LOCAL_PREFIX, Request, human_bytes};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::MessageEvent;

pub(crate) use state::send;
use state::{Ctx, LAST_MODEL, local_storage};

async fn fetch_catalog() -> Result<Catalog, String> {
    let window = web_sys::window().ok_or("no window")?;
    let resp: web_sys::Response = JsFuture::from(window.fetch_with_str("models/catalog.json"))
        .await
        .map_err(|e| format!("models/catalog.json: {e:?}"))?
        .unchecked_into();
    if !resp.ok() {
        return Err(format!("models/catalog.json: HTTP {}", resp.status()));
    }
    let text = JsFuture::from(resp.text().map_err(|e| format!("{e:?}"))?).await.map_err(|e| format!("{e:?}"))?;
    serde_json::from_str(&text.as_string().unwrap_or_default()).map_err(|e| format!("models/catalog.json: {e}"))
}

#[component]
pub fn App() -> impl IntoView {
    let ctx = Ctx::new();
    let models = ctx.models;

    // The worker's two handlers. If the worker dies while on the GPU (a lost device makes wgpu
    // fail inside the encoder), the page starts a new one on the CPU: the collection is in this
    // browser's storage, so nothing but the images in flight is lost. If the threaded CPU build
    // fails to start, the one-thread build takes over.
    let onmessage = Closure::<dyn Fn(MessageEvent)>::new(move |msg: MessageEvent| events::on_message(ctx, msg));
    let onerror = Closure::<dyn Fn(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
        ev.prevent_default();
        let message = ev.message();
        web_sys::console::error_1(&format!("the worker stopped: {message}").into());
        ctx.adding.set(false);
        ctx.progress.set(None);
        ctx.lab.running.set(None);
        if ctx.threaded.get_value() && !ctx.booted.get_untracked() {
            ctx.threads_failed.set_value(true);
            ctx.force_cpu.set(Some(format!("the threaded build failed to start: {message}")));
            ctx.replace_worker(true);
            return;
        }
        let on_gpu = ctx.backend.get_untracked().is_some_and(|(b, _)| b == Backend::Webgpu);
        if !on_gpu {
            ctx.error.set(Some(format!("The worker stopped ({message}). Reload the page; the collection is kept in this browser.")));
            return;
        }
        ctx.force_cpu.set(Some(format!("the GPU failed ({message})")));
        ctx.error.set(Some(
            "The GPU failed: moving to the CPU backend. The collection is kept in this browser and comes back in a moment; images that were being added when it failed need adding again (the others are skipped as duplicates).".into(),
        ));
        ctx.replace_worker(true);
    });
    let message_fn: js_sys::Function = onmessage.into_js_value().unchecked_into();
    let error_fn: js_sys::Function = onerror.into_js_value().unchecked_into();
    ctx.handlers.set_value(Some((message_fn, error_fn)));
    // The WebGPU build where the browser has a WebGPU adapter, else the threaded CPU build where
    // the page can run it (asking for the adapter takes milliseconds; the worker greets the page
    // when it is up, and the page sends nothing before).
    spawn_local(async move { ctx.install(spawn::new_worker(!spawn::gpu_adapter().await, true)) });

    spawn_local(async move {
        match fetch_catalog().await {
            Ok(c) => {
                // The last model chosen in this browser (a stored one loads from here), else the
                // default.
                let last = local_storage().and_then(|s| s.get_item(LAST_MODEL).ok().flatten());
                let known = |id: &String| id.starts_with(LOCAL_PREFIX) || c.models.iter().any(|m| &m.id == id);
                models.model.set(last.filter(known).or_else(|| c.default_model().map(|m| m.id.clone())));
                models.catalog.set(Some(c));
                ctx.load_model();
            }
            Err(e) => ctx.error.set(Some(e)),
        }
    });

    view! {
        <header>
            <h1>"Obscura"</h1>
            <span class="tag">"private image search — everything stays on this device"</span>
            <span class="spacer"></span>
            <span class="badge" data-testid="backend" title=move || ctx.backend.get().map(|b| b.1).unwrap_or_default()>
                {move || match ctx.backend.get() {
                    // The short reason; the whole of it is in the title.
                    Some((b, detail)) => format!("{} · {}", b.label(), detail.split(" (").next().unwrap_or_default()),
                    None => "loading".into(),
                }}
            </span>
        </header>
        <main>
            <model_panel::ModelPanel state=models worker=ctx.worker
                on_select=Callback::new(move |id: String| { models.model.set(Some(id)); ctx.load_model(); })
                ready=Signal::derive(move || {
                    let id = models.model.get()?;
                    let base = models.base_of(&id)?;
                    (ctx.loaded.get().as_deref() == Some(base.as_str())).then_some(())?;
                    ctx.backend.get().map(|(b, _)| format!("{} on {}", models.name_of(&id), b.label()))
                })/>
            <p class="status" role="status" data-testid="status">
                {move || ctx.status.get()}
                {move || ctx.download_progress.get().map(|(l, t, c)| {
                    let pct = if t > 0 { 100.0 * l as f64 / t as f64 } else { 0.0 };
                    view! {
                        <span class="progress">
                            <progress max=t.to_string() value=l.to_string()></progress>
                            {format!(" {} of {} ({pct:.0}%){}", human_bytes(l), human_bytes(t),
                                if c > 0 { format!(", {} from this browser's cache", human_bytes(c)) } else { String::new() })}
                        </span>
                    }
                })}
            </p>
            {move || ctx.error.get().map(|e| view! {
                <p class="error" role="alert">{e}" "<button on:click=move |_| ctx.error.set(None)>"dismiss"</button></p>
            })}
            <add::AddImages ctx=ctx/>
            <search::Search ctx=ctx/>
            <gallery::Viewer ctx=ctx/>
            <classify::Classify ctx=ctx/>
            <lab::Lab ctx=ctx/>
            <gallery::Gallery ctx=ctx/>
        </main>
        <footer>
            <p>"Images, thumbnails and embeddings are computed and kept in this browser (its private storage for this site); nothing is uploaded. The only network requests fetch the app and the model's weights, from this site."</p>
            <p>{move || ctx.storage.get().map(|s| format!("Storage used by this site: {}. ", human_bytes(s)))}
                <button on:click=move |_| { ctx.loaded.set(None); ctx.send(&Request::ClearModels, &[]) }>"Clear downloaded models"</button>
            </p>
        </footer>
    }
}
