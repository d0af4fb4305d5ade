//! The UI (main thread). Everything heavy happens in the worker (`src/bin/worker.rs`); this side
//! renders, collects files from drops and pickers, and turns worker events into signals.

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("the app runs in the browser: `bash scripts/run.sh` builds and serves it");
}

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(ui::App);
}

#[cfg(target_arch = "wasm32")]
mod files;

#[cfg(target_arch = "wasm32")]
mod ui {
    use std::collections::HashMap;

    use app::{Backend, Catalog, Event, Hit, Query, Request, apply_template, human_bytes, human_seconds};
    use js_sys::{Array, Uint8Array};
    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::{JsFuture, spawn_local};
    use web_sys::{Blob, BlobPropertyBag, DragEvent, File, HtmlInputElement, KeyboardEvent, MessageEvent, Url, Worker};

    use crate::files;

    const PAGE: usize = 24;

    #[derive(Clone, Debug, PartialEq)]
    struct Thumb {
        id: u64,
        name: String,
        url: String,
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Progress {
        done: usize,
        total: usize,
        per_second: f64,
    }

    fn send(worker: &Worker, request: &Request, files: &[File]) {
        let msg = Array::new();
        msg.push(&JsValue::from_str(&serde_json::to_string(request).expect("requests serialise")));
        for f in files {
            msg.push(f);
        }
        if let Err(e) = worker.post_message(&msg) {
            web_sys::console::error_2(&"postMessage failed".into(), &e);
        }
    }

    fn blob_url(bytes: &Uint8Array, mime: &str) -> String {
        let parts = Array::of1(bytes);
        let opts = BlobPropertyBag::new();
        opts.set_type(mime);
        Blob::new_with_u8_array_sequence_and_options(&parts, &opts)
            .and_then(|b| Url::create_object_url_with_blob(&b))
            .unwrap_or_default()
    }

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

    async fn storage_used() -> Option<u64> {
        let storage = web_sys::window()?.navigator().storage();
        let estimate: web_sys::StorageEstimate = JsFuture::from(storage.estimate().ok()?).await.ok()?.unchecked_into();
        estimate.get_usage().map(|u| u as u64)
    }

    #[component]
    pub fn App() -> impl IntoView {
        let catalog = RwSignal::new(None::<Catalog>);
        let model = RwSignal::new(None::<String>); // id of the chosen catalog model
        let loaded = RwSignal::new(None::<String>); // base of the model loaded in the worker
        let download = RwSignal::new(None::<(u64, u64, u64)>);
        let backend = RwSignal::new(None::<(Backend, String)>);
        let status = RwSignal::new(String::from("Starting…"));
        let error = RwSignal::new(None::<String>);
        let thumbs = RwSignal::new(Vec::<Thumb>::new());
        let by_id = StoredValue::new(HashMap::<u64, (String, String)>::new());
        let progress = RwSignal::new(None::<Progress>);
        let adding = RwSignal::new(false);
        let skipped = RwSignal::new(Vec::<(String, String)>::new());
        let results = RwSignal::new(None::<(Query, Vec<Hit>)>);
        let last_query = StoredValue::new(None::<Request>);
        let limit = RwSignal::new(PAGE);
        let threshold = RwSignal::new(0.0f32);
        let use_template = RwSignal::new(true);
        let query = RwSignal::new(String::new());
        let viewer = RwSignal::new(None::<u64>);
        let storage = RwSignal::new(None::<u64>);
        let booted = RwSignal::new(false);

        // `webkitdirectory` makes the picker choose folders; the view macro has no name for it.
        let folder_input = NodeRef::<leptos::html::Input>::new();
        Effect::new(move |_| {
            if let Some(el) = folder_input.get() {
                let _ = el.set_attribute("webkitdirectory", "");
            }
        });

        let worker = Worker::new("./worker_loader.js").expect("the worker script is part of the app");
        let worker = StoredValue::new_local(worker);

        let template = move || {
            let id = model.get()?;
            catalog.with(|c| c.as_ref()?.models.iter().find(|m| m.id == id)?.templates.first().cloned())
        };

        let load_model = move || {
            let Some(id) = model.get_untracked() else { return };
            let Some(base) =
                catalog.with_untracked(|c| c.as_ref()?.models.iter().find(|m| m.id == id).map(|m| m.preferred().path.clone()))
            else {
                return;
            };
            let base = format!("models/{base}");
            if loaded.get_untracked().as_deref() == Some(base.as_str()) || !booted.get_untracked() {
                return;
            }
            if !thumbs.with_untracked(Vec::is_empty) {
                // Embeddings of two models never mix: switching starts a new collection.
                thumbs.with_untracked(|t| t.iter().for_each(|t| Url::revoke_object_url(&t.url).unwrap_or_default()));
                thumbs.set(Vec::new());
                by_id.update_value(HashMap::clear);
                results.set(None);
            }
            loaded.set(Some(base.clone()));
            backend.set(None);
            status.set(format!("Loading {id}…"));
            worker.with_value(|w| send(w, &Request::Load { base }, &[]));
        };

        let search_now = move |extra: usize| {
            let text = query.get_untracked();
            if text.trim().is_empty() {
                return;
            }
            let text = if use_template.get_untracked() { apply_template(template().as_deref(), &text) } else { text };
            limit.set(extra);
            let request = Request::Search { text, limit: extra };
            last_query.set_value(Some(request.clone()));
            worker.with_value(|w| send(w, &request, &[]));
        };

        let similar = move |id: u64| {
            viewer.set(Some(id));
            limit.set(PAGE);
            let request = Request::Similar { id, limit: PAGE };
            last_query.set_value(Some(request.clone()));
            worker.with_value(|w| send(w, &request, &[]));
        };

        let show_more = move |_| {
            let more = limit.get_untracked() + PAGE;
            limit.set(more);
            let request = match last_query.get_value() {
                Some(Request::Search { text, .. }) => Request::Search { text, limit: more },
                Some(Request::Similar { id, .. }) => Request::Similar { id, limit: more },
                _ => return,
            };
            last_query.set_value(Some(request.clone()));
            worker.with_value(|w| send(w, &request, &[]));
        };

        let add_files = move |list: Vec<(String, File)>| {
            if list.is_empty() {
                return;
            }
            if loaded.get_untracked().is_none() || backend.get_untracked().is_none() {
                error.set(Some("The model is still loading: add images when it is ready.".into()));
                return;
            }
            let (names, files): (Vec<String>, Vec<File>) = list.into_iter().unzip();
            skipped.set(Vec::new());
            adding.set(true);
            progress.set(Some(Progress { done: 0, total: files.len(), per_second: 0.0 }));
            worker.with_value(|w| send(w, &Request::Add { names }, &files));
        };

        // Worker events → signals.
        let onmessage = Closure::<dyn Fn(MessageEvent)>::new(move |msg: MessageEvent| {
            let data = Array::from(&msg.data());
            let Some(event) = data.get(0).as_string().and_then(|s| serde_json::from_str::<Event>(&s).ok()) else { return };
            match event {
                Event::Booted => {
                    booted.set(true);
                    load_model();
                }
                Event::Download { loaded, total, cached } => download.set(Some((loaded, total, cached))),
                Event::ModelReady { backend: b, detail, millis, .. } => {
                    backend.set(Some((b, detail)));
                    download.set(None);
                    status.set(format!("Model ready in {}", human_seconds(millis / 1000.0)));
                    spawn_local(async move { storage.set(storage_used().await) });
                }
                Event::ModelFailed { base, message } => {
                    loaded.set(None);
                    download.set(None);
                    error.set(Some(format!("Could not load {base}: {message}")));
                    status.set("No model loaded".into());
                }
                Event::Added { id, name } => {
                    let url = data.get(1).dyn_into::<Uint8Array>().map(|b| blob_url(&b, "image/jpeg")).unwrap_or_default();
                    by_id.update_value(|m| {
                        m.insert(id, (name.clone(), url.clone()));
                    });
                    thumbs.update(|t| t.push(Thumb { id, name, url }));
                }
                Event::Skipped { name, reason } => skipped.update(|s| s.push((name, reason))),
                Event::Indexing { done, total, per_second } => progress.set(Some(Progress { done, total, per_second })),
                Event::Finished { added, skipped: n, cancelled, seconds } => {
                    adding.set(false);
                    progress.set(None);
                    let rate = added as f64 / seconds.max(1e-3);
                    status.set(format!(
                        "{} {added} images in {} ({rate:.1}/s){}",
                        if cancelled { "Cancelled after" } else { "Indexed" },
                        human_seconds(seconds),
                        if n > 0 { format!(", {n} skipped") } else { String::new() }
                    ));
                }
                Event::Results { query, hits } => results.set(Some((query, hits))),
                Event::ModelsCleared => {
                    status.set("Downloaded models cleared".into());
                    spawn_local(async move { storage.set(storage_used().await) });
                }
                Event::Error { message } => error.set(Some(message)),
            }
        });
        worker.with_value(|w| w.set_onmessage(Some(onmessage.as_ref().unchecked_ref())));
        onmessage.forget();

        spawn_local(async move {
            match fetch_catalog().await {
                Ok(c) => {
                    model.set(c.default_model().map(|m| m.id.clone()));
                    catalog.set(Some(c));
                    load_model();
                }
                Err(e) => error.set(Some(e)),
            }
        });

        let on_pick = move |ev: leptos::ev::Event| {
            let input: HtmlInputElement = event_target(&ev);
            let list = input.files().map(|l| files::from_list(&l)).unwrap_or_default();
            add_files(list);
            input.set_value("");
        };
        let on_drop = move |ev: DragEvent| {
            ev.prevent_default();
            let Some(dt) = ev.data_transfer() else { return };
            let pending = files::from_drop(&dt);
            spawn_local(async move { add_files(pending.await) });
        };
        let on_query_drop = move |ev: DragEvent| {
            ev.prevent_default();
            ev.stop_propagation();
            let Some(file) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) else { return };
            let request = Request::QueryImage { name: file.name(), limit: PAGE };
            last_query.set_value(None);
            worker.with_value(|w| send(w, &request, &[file]));
        };
        let on_keydown = move |ev: KeyboardEvent| match ev.key().as_str() {
            "Enter" => search_now(PAGE),
            "Escape" => viewer.set(None),
            _ => {}
        };

        let result_items = move || {
            let (q, hits) = results.get()?;
            let t = threshold.get();
            let shown: Vec<(Hit, String, String)> = by_id.with_value(|m| {
                hits.iter()
                    .filter(|h| h.score >= t)
                    .filter_map(|h| m.get(&h.id).map(|(n, u)| (*h, n.clone(), u.clone())))
                    .collect()
            });
            let title = match q {
                Query::Text { text } => format!("“{text}”"),
                Query::Similar { id } => format!("Similar to {}", by_id.with_value(|m| m.get(&id).map(|x| x.0.clone()).unwrap_or_default())),
                Query::Image { name } => format!("Similar to {name} (not added)"),
            };
            Some((title, shown, hits.len()))
        };

        view! {
            <header>
                <h1>"Obscura"</h1>
                <span class="tag">"private image search — everything stays on this device"</span>
                <span class="spacer"></span>
                <label>"Model "
                    <select on:change=move |ev| { model.set(Some(event_target_value(&ev))); load_model(); }>
                        {move || catalog.get().map(|c| c.models.into_iter().map(|m| {
                            let selected = model.get().as_deref() == Some(m.id.as_str());
                            let v = m.preferred().clone();
                            view! { <option value=m.id.clone() selected=selected>{format!("{} ({}, {})", m.name, v.dtype, human_bytes(v.bytes))}</option> }
                        }).collect_view())}
                    </select>
                </label>
                <span class="badge" data-testid="backend" title=move || backend.get().map(|b| b.1).unwrap_or_default()>
                    {move || match backend.get() {
                        // The short reason; the whole of it is in the title.
                        Some((b, detail)) => format!("{} · {}", b.label(), detail.split(" (").next().unwrap_or_default()),
                        None => "loading".into(),
                    }}
                </span>
            </header>
            <main>
                <p class="status" role="status">
                    {move || status.get()}
                    {move || download.get().map(|(l, t, c)| {
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
                {move || error.get().map(|e| view! {
                    <p class="error" role="alert">{e}" "<button on:click=move |_| error.set(None)>"dismiss"</button></p>
                })}
                <section class="drop" data-testid="drop-zone"
                    on:dragover=move |ev: DragEvent| ev.prevent_default()
                    on:drop=on_drop>
                    <p>"Drop images or folders here, or "
                        <label class="button">"choose files"
                            <input type="file" multiple accept="image/*" data-testid="file-input" on:change=on_pick/>
                        </label>" "
                        <label class="button">"choose a folder"
                            <input type="file" multiple node_ref=folder_input on:change=on_pick/>
                        </label>
                    </p>
                    {move || progress.get().map(|p| {
                        let left = if p.per_second > 0.0 { (p.total - p.done) as f64 / p.per_second } else { 0.0 };
                        view! {
                            <p class="progress">
                                <progress max=p.total.to_string() value=p.done.to_string()></progress>
                                {format!(" {} of {} · {:.1} images/s · {} left ", p.done, p.total, p.per_second, human_seconds(left))}
                                <button on:click=move |_| worker.with_value(|w| send(w, &Request::Cancel, &[]))>"Cancel"</button>
                            </p>
                        }
                    })}
                    {move || (!skipped.with(Vec::is_empty)).then(|| view! {
                        <details class="skipped" open>
                            <summary>{move || format!("{} files skipped", skipped.with(Vec::len))}</summary>
                            <ul>{move || skipped.get().into_iter().map(|(n, r)| view! { <li data-testid="skipped" data-file=n.clone()><b>{n.clone()}</b>": "{r}</li> }).collect_view()}</ul>
                        </details>
                    })}
                </section>
                <section class="search" on:dragover=move |ev: DragEvent| ev.prevent_default() on:drop=on_query_drop>
                    <input type="search" data-testid="search-input" placeholder="Search with words, or drop an image here"
                        prop:value=move || query.get()
                        on:input=move |ev| query.set(event_target_value(&ev))
                        on:keydown=on_keydown/>
                    <button on:click=move |_| search_now(PAGE)>"Search"</button>
                    <label title="Wrap the query in the model's prompt template">
                        <input type="checkbox" prop:checked=move || use_template.get() on:change=move |ev| use_template.set(event_target_checked(&ev))/>
                        {move || format!(" template: {}", template().unwrap_or_else(|| "none".into()))}
                    </label>
                    <label>" min. similarity "
                        <input type="range" min="-0.2" max="0.6" step="0.01" prop:value=move || threshold.get().to_string()
                            on:input=move |ev| threshold.set(event_target_value(&ev).parse().unwrap_or(0.0))/>
                        {move || format!(" {:.2}", threshold.get())}
                    </label>
                </section>
                {move || result_items().map(|(title, shown, n)| view! {
                    <section class="results">
                        <h2>{title}</h2>
                        <ol class="grid">
                            {shown.into_iter().map(|(h, name, url)| view! {
                                <li data-testid="result" data-file=name.clone() data-score=h.score.to_string()>
                                    <button on:click=move |_| similar(h.id) title=format!("{name}: find similar")>
                                        <img src=url alt=name.clone()/>
                                    </button>
                                    <span class="score">{format!("{:.3}", h.score)}</span>
                                    <span class="name">{name.clone()}</span>
                                </li>
                            }).collect_view()}
                        </ol>
                        {(n >= limit.get_untracked()).then(|| view! { <button on:click=show_more>"Show more"</button> })}
                    </section>
                })}
                <section class="collection">
                    <h2>"Collection: " <span data-testid="image-count">{move || thumbs.with(Vec::len)}</span>" images"</h2>
                    <ul class="grid">
                        <For each=move || thumbs.get() key=|t| t.id let:t>
                            <li data-testid="item" data-file=t.name.clone()>
                                <button on:click=move |_| similar(t.id) title=format!("{}: find similar", t.name)>
                                    <img src=t.url.clone() alt=t.name.clone() loading="lazy"/>
                                </button>
                            </li>
                        </For>
                    </ul>
                </section>
            </main>
            <footer>
                <p>"Images, thumbnails and embeddings are computed and kept in this tab; nothing is uploaded. The only network requests fetch the app and the model's weights, from this site."</p>
                <p>{move || storage.get().map(|s| format!("Storage used by this site: {}. ", human_bytes(s)))}
                    <button on:click=move |_| { loaded.set(None); worker.with_value(|w| send(w, &Request::ClearModels, &[])) }>"Clear downloaded models"</button>
                </p>
            </footer>
        }
    }
}
