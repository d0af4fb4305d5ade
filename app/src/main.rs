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
mod model_panel;

#[cfg(target_arch = "wasm32")]
mod ui {
    use std::collections::HashMap;

    use app::{
        Backend, Catalog, Classification, Event, Hit, LOCAL_PREFIX, Origin, Query, Request, apply_template, classification_csv, human_bytes,
        human_seconds, parse_labels,
    };
    use js_sys::{Array, Uint8Array};
    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::{JsFuture, spawn_local};
    use web_sys::{
        Blob, BlobPropertyBag, DragEvent, Element, File, HtmlAnchorElement, HtmlElement, HtmlInputElement, KeyboardEvent,
        MessageEvent, Url, Worker,
    };

    use crate::files;
    use crate::model_panel::{ImportProgress, ModelPanel, ModelState};

    /// Where the last chosen model is remembered (this browser only).
    const LAST_MODEL: &str = "obscura-model";

    fn local_storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok().flatten()
    }

    const PAGE: usize = 24;
    /// Gallery cells: a square thumbnail and the gap after it, in CSS pixels.
    const CELL: f64 = 120.0;
    const PITCH: f64 = 128.0;

    /// Labels of the last classification, and each image's.
    #[derive(Clone, Debug, PartialEq)]
    struct Classes {
        labels: Vec<String>,
        rows: HashMap<u64, Classification>,
    }

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

    pub(crate) fn send(worker: &Worker, request: &Request, files: &[File]) {
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

    /// Saves `blob` as `name` through the browser's download (no network involved).
    fn download(blob: &Blob, name: &str) {
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

    /// Arrow keys move the focus through a grid of buttons (results or gallery).
    fn grid_keys(ev: &KeyboardEvent) {
        let step: i32 = match ev.key().as_str() {
            "ArrowRight" => 1,
            "ArrowLeft" => -1,
            "ArrowDown" | "ArrowUp" => 0,
            _ => return,
        };
        let Some(item) = ev.target().and_then(|t| t.dyn_into::<Element>().ok()).and_then(|e| e.closest("li").ok().flatten())
        else {
            return;
        };
        let Some(list) = item.parent_element() else { return };
        let items = list.children();
        let n = items.length() as i32;
        let here = (0..n).find(|&i| items.item(i as u32).as_ref() == Some(&item)).unwrap_or(0);
        let columns = {
            let w = (item.client_width() as f64).max(1.0);
            ((list.client_width() as f64 + 8.0) / (w + 8.0)).floor().max(1.0) as i32
        };
        let to = match ev.key().as_str() {
            "ArrowDown" => here + columns,
            "ArrowUp" => here - columns,
            _ => here + step,
        };
        if let Some(button) = items.item(to.clamp(0, n - 1) as u32).and_then(|li| li.query_selector("button").ok().flatten()) {
            ev.prevent_default();
            let _ = button.unchecked_into::<HtmlElement>().focus();
        }
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
        let models = ModelState::new();
        let catalog = models.catalog;
        let model = models.model; // id of the chosen model: a catalog id or `local/<key>`
        // Images dropped before the model is ready wait here and are added once it is.
        let waiting = StoredValue::new_local(Vec::<(String, File)>::new());
        let loaded = RwSignal::new(None::<String>); // base of the model loaded in the worker
        let download_progress = RwSignal::new(None::<(u64, u64, u64)>);
        let backend = RwSignal::new(None::<(Backend, String)>);
        let status = RwSignal::new(String::from("Starting…"));
        let error = RwSignal::new(None::<String>);
        let thumbs = RwSignal::new(Vec::<Thumb>::new());
        let by_id = StoredValue::new(HashMap::<u64, (String, String)>::new());
        // Slide patches: where each lies in its slide.
        let origins = StoredValue::new(HashMap::<u64, Origin>::new());
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
        let classes = RwSignal::new(None::<Classes>);
        let label_filter = RwSignal::new(None::<usize>);
        let labels_text = RwSignal::new(String::new());
        let class_template = RwSignal::new(None::<String>); // None: the model's template
        let scroll_top = RwSignal::new(0.0f64);
        let gallery_size = RwSignal::new((960.0f64, 560.0f64));

        // `webkitdirectory` makes the picker choose folders; the view macro has no name for it.
        let folder_input = NodeRef::<leptos::html::Input>::new();
        Effect::new(move |_| {
            if let Some(el) = folder_input.get() {
                let _ = el.set_attribute("webkitdirectory", "");
            }
        });
        let gallery = NodeRef::<leptos::html::Div>::new();
        let measure = move || {
            if let Some(el) = gallery.get_untracked() {
                gallery_size.set((el.client_width() as f64, el.client_height() as f64));
                scroll_top.set(el.scroll_top() as f64);
            }
        };
        Effect::new(move |_| {
            if gallery.get().is_some() {
                measure();
            }
        });
        let _ = window_event_listener(leptos::ev::resize, move |_| measure());

        // The worker, and its two handlers (set below). If the worker dies while on the GPU (a
        // lost device makes wgpu fail inside the encoder), the page starts a new one on the CPU:
        // the collection is in this browser's storage, so nothing but the images in flight is lost.
        let worker = StoredValue::new_local(Worker::new("./worker_loader.js").expect("the worker script is part of the app"));
        let handlers = StoredValue::new_local(None::<(js_sys::Function, js_sys::Function)>);
        let force_cpu = RwSignal::new(None::<String>);
        let send_request = move |request: &Request, files: &[File]| worker.with_value(|w| send(w, request, files));

        let template = move || models.template_of(&model.get()?);

        let forget_thumbs = move || {
            thumbs.with_untracked(|t| t.iter().for_each(|t| Url::revoke_object_url(&t.url).unwrap_or_default()));
            thumbs.set(Vec::new());
            by_id.update_value(HashMap::clear);
            origins.update_value(HashMap::clear);
            results.set(None);
            classes.set(None);
            label_filter.set(None);
            viewer.set(None);
        };

        let load_model = move || {
            let Some(id) = model.get_untracked() else { return };
            let Some(base) = models.base_of(&id) else { return };
            if loaded.get_untracked().as_deref() == Some(base.as_str()) || !booted.get_untracked() {
                return;
            }
            models.failed.set(None);
            if let Some(s) = local_storage() {
                let _ = s.set_item(LAST_MODEL, &id);
            }
            // Each model has its own collection: the worker restores this model's after loading.
            forget_thumbs();
            loaded.set(Some(base.clone()));
            backend.set(None);
            status.set(format!("Loading {}…", models.name_of(&id)));
            send_request(&Request::Load { base, cpu: force_cpu.get_untracked() }, &[]);
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
            send_request(&request, &[]);
        };

        let similar = move |id: u64| {
            viewer.set(Some(id));
            limit.set(PAGE);
            let request = Request::Similar { id, limit: PAGE };
            last_query.set_value(Some(request.clone()));
            send_request(&request, &[]);
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
            send_request(&request, &[]);
        };

        let model_ready = move || loaded.get_untracked().is_some() && backend.get_untracked().is_some();

        let add_files = move |list: Vec<(String, File)>| {
            if list.is_empty() {
                return;
            }
            if !model_ready() {
                // Kept, and added as soon as the model is ready.
                waiting.update_value(|w| w.extend(list));
                let n = waiting.with_value(Vec::len);
                status.set(format!("{n} images waiting for the model: they are added as soon as it is ready"));
                return;
            }
            let (names, files): (Vec<String>, Vec<File>) = list.into_iter().unzip();
            skipped.set(Vec::new());
            adding.set(true);
            progress.set(Some(Progress { done: 0, total: files.len(), per_second: 0.0 }));
            send_request(&Request::Add { names }, &files);
        };

        let classify = move || {
            let labels = parse_labels(&labels_text.get_untracked());
            let template = class_template.get_untracked().or_else(template).filter(|t| !t.trim().is_empty());
            label_filter.set(None);
            status.set(format!("Classifying {} images against {} labels…", thumbs.with_untracked(Vec::len), labels.len()));
            send_request(&Request::Classify { labels, template }, &[]);
        };

        let export_csv = move |_| {
            let Some(c) = classes.get_untracked() else { return };
            let rows: Vec<(String, &Classification)> = thumbs.with_untracked(|t| {
                t.iter().filter_map(|t| c.rows.get(&t.id).map(|r| (t.name.clone(), r))).collect()
            });
            let csv = classification_csv(&c.labels, &rows);
            let opts = BlobPropertyBag::new();
            opts.set_type("text/csv");
            if let Ok(blob) = Blob::new_with_str_sequence_and_options(&Array::of1(&JsValue::from_str(&csv)), &opts) {
                download(&blob, "obscura-classification.csv");
            }
        };

        // Worker events → signals.
        let onmessage = Closure::<dyn Fn(MessageEvent)>::new(move |msg: MessageEvent| {
            let data = Array::from(&msg.data());
            let Some(event) = data.get(0).as_string().and_then(|s| serde_json::from_str::<Event>(&s).ok()) else { return };
            match event {
                Event::Booted => {
                    booted.set(true);
                    send_request(&Request::ListModels, &[]);
                    load_model();
                }
                Event::LocalModels { models: list } => {
                    let current = model.get_untracked().unwrap_or_default();
                    let gone = current.starts_with(LOCAL_PREFIX) && !list.iter().any(|m| m.base() == current);
                    models.local.set(list);
                    if gone {
                        // The selected stored model was removed: back to the app's default.
                        if let Some(s) = local_storage() {
                            let _ = s.remove_item(LAST_MODEL);
                        }
                        loaded.set(None);
                        backend.set(None);
                        model.set(catalog.with_untracked(|c| c.as_ref().and_then(|c| c.default_model().map(|m| m.id.clone()))));
                        load_model();
                    }
                }
                Event::ImportProgress { stage, done, total } => models.progress.update(|p| {
                    let started = match p {
                        Some(p) if p.stage == stage => p.started,
                        _ => js_sys::Date::now(),
                    };
                    *p = Some(ImportProgress { stage, done, total, started });
                }),
                Event::ImportChecked { fidelity, passes } => {
                    models.check.set(Some((fidelity, passes)));
                    if !passes {
                        models.importing.set(false);
                        models.progress.set(None);
                    }
                }
                Event::ImportDone { model: m, duplicate, seconds, wasm_memory } => {
                    models.import_stats.set(Some((seconds, wasm_memory)));
                    models.importing.set(false);
                    models.progress.set(None);
                    models.import_note.set(Some(if duplicate {
                        format!("{} is already on this device ({}): selected, not stored twice.", m.name, m.dtype)
                    } else {
                        format!("{} ({}, {}) is stored on this device and loads from here next time.", m.name, m.dtype, human_bytes(m.bytes))
                    }));
                    models.local.update(|l| {
                        if !l.iter().any(|x| x.key == m.key) {
                            l.push(m.clone());
                        }
                    });
                    model.set(Some(m.base()));
                    load_model();
                }
                Event::ImportFailed { message } => {
                    models.importing.set(false);
                    models.progress.set(None);
                    models.import_error.set(Some(message));
                }
                Event::Download { loaded, total, cached } => download_progress.set(Some((loaded, total, cached))),
                Event::ModelReady { backend: b, detail, millis, .. } => {
                    backend.set(Some((b, detail)));
                    download_progress.set(None);
                    status.set(format!("Model ready in {}", human_seconds(millis / 1000.0)));
                    spawn_local(async move { storage.set(storage_used().await) });
                }
                Event::ModelFailed { base, message } => {
                    loaded.set(None);
                    download_progress.set(None);
                    models.failed.set(Some(message.clone()));
                    error.set(Some(format!("Could not load {base}: {message}")));
                    status.set("No model loaded".into());
                    if base.starts_with(LOCAL_PREFIX) {
                        // A stored model that is gone: back to the app's default.
                        if let Some(s) = local_storage() {
                            let _ = s.remove_item(LAST_MODEL);
                        }
                        let fallback = catalog.with_untracked(|c| c.as_ref().and_then(|c| c.default_model().map(|m| m.id.clone())));
                        if fallback.is_some() && fallback != model.get_untracked() {
                            model.set(fallback);
                            load_model();
                        }
                    }
                }
                Event::BackendChanged { backend: b, detail } => {
                    error.set(Some(format!("Moved to the {} backend: {detail}. The collection is unchanged.", b.label())));
                    backend.set(Some((b, detail)));
                }
                Event::Restored { count, dropped_tail } => {
                    let queued = waiting.try_update_value(std::mem::take).unwrap_or_default();
                    if !queued.is_empty() {
                        let (names, files): (Vec<String>, Vec<File>) = queued.into_iter().unzip();
                        skipped.set(Vec::new());
                        adding.set(true);
                        progress.set(Some(Progress { done: 0, total: files.len(), per_second: 0.0 }));
                        send_request(&Request::Add { names }, &files);
                    }
                    if count > 0 {
                        status.set(format!("{count} images restored from this browser's storage"));
                    }
                    if dropped_tail {
                        error.set(Some("The last images being added when the tab closed were not saved; add them again.".into()));
                    }
                }
                Event::Added { items, restored: _ } => {
                    let new: Vec<Thumb> = items
                        .into_iter()
                        .enumerate()
                        .map(|(k, item)| {
                            let url = data
                                .get(k as u32 + 1)
                                .dyn_into::<Uint8Array>()
                                .map(|b| blob_url(&b, "image/jpeg"))
                                .unwrap_or_default();
                            if let Some(o) = item.origin {
                                origins.update_value(|m| {
                                    m.insert(item.id, o);
                                });
                            }
                            Thumb { id: item.id, name: item.name, url }
                        })
                        .collect();
                    by_id.update_value(|m| {
                        for t in &new {
                            m.insert(t.id, (t.name.clone(), t.url.clone()));
                        }
                    });
                    thumbs.update(|t| t.extend(new));
                }
                Event::Removed { ids } => {
                    let gone: std::collections::HashSet<u64> = ids.into_iter().collect();
                    thumbs.update(|t| {
                        t.retain(|t| {
                            let keep = !gone.contains(&t.id);
                            if !keep {
                                Url::revoke_object_url(&t.url).unwrap_or_default();
                            }
                            keep
                        })
                    });
                    by_id.update_value(|m| m.retain(|id, _| !gone.contains(id)));
                    origins.update_value(|m| m.retain(|id, _| !gone.contains(id)));
                    classes.update(|c| {
                        if let Some(c) = c {
                            c.rows.retain(|id, _| !gone.contains(id));
                        }
                    });
                    if thumbs.with_untracked(Vec::is_empty) {
                        results.set(None);
                        classes.set(None);
                    } else {
                        results.update(|r| {
                            if let Some((_, hits)) = r {
                                hits.retain(|h| !gone.contains(&h.id));
                            }
                        });
                    }
                    if viewer.get_untracked().is_some_and(|v| gone.contains(&v)) {
                        viewer.set(None);
                    }
                    status.set(format!("{} images removed", gone.len()));
                    spawn_local(async move { storage.set(storage_used().await) });
                }
                Event::Skipped { name, reason } => skipped.update(|s| s.push((name, reason))),
                Event::Indexing { done, total, per_second } => progress.set(Some(Progress { done, total, per_second })),
                Event::SlideOpened { name, format, width, height, mpp, target_mpp, level, patches, tissue, associated } => {
                    let hidden = if associated.is_empty() {
                        String::new()
                    } else {
                        format!("; its {} image(s) are not shown", associated.join(", "))
                    };
                    status.set(format!(
                        "{name}: {format}, {width}×{height} px at {mpp:.3} µm/px, {:.0}% tissue: {patches} patches at {target_mpp} µm/px from level {level}{hidden}",
                        100.0 * tissue
                    ));
                    progress.set(Some(Progress { done: 0, total: patches, per_second: 0.0 }));
                }
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
                    spawn_local(async move { storage.set(storage_used().await) });
                }
                Event::Results { query, hits } => results.set(Some((query, hits))),
                Event::Classified { labels, rows } => {
                    status.set(format!("Classified {} images", rows.len()));
                    classes.set(Some(Classes { labels, rows: rows.into_iter().map(|r| (r.id, r)).collect() }));
                }
                Event::Exported { file_name, count } => {
                    if let Ok(bytes) = data.get(1).dyn_into::<Uint8Array>() {
                        let opts = BlobPropertyBag::new();
                        opts.set_type("application/octet-stream");
                        if let Ok(blob) = Blob::new_with_u8_array_sequence_and_options(&Array::of1(&bytes), &opts) {
                            download(&blob, &file_name);
                            status.set(format!("Exported {count} images to {file_name}"));
                        }
                    }
                }
                Event::Imported { name, added, duplicates } => {
                    status.set(format!(
                        "Imported {added} images from {name}{}",
                        if duplicates > 0 { format!(" ({duplicates} already here)") } else { String::new() }
                    ));
                    spawn_local(async move { storage.set(storage_used().await) });
                }
                Event::ModelsCleared => {
                    status.set("Downloaded models cleared".into());
                    spawn_local(async move { storage.set(storage_used().await) });
                }
                Event::Error { message } => error.set(Some(message)),
            }
        });
        let onerror = Closure::<dyn Fn(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
            ev.prevent_default();
            let message = ev.message();
            web_sys::console::error_1(&format!("the worker stopped: {message}").into());
            let on_gpu = backend.get_untracked().is_some_and(|(b, _)| b == Backend::Webgpu);
            if !on_gpu {
                error.set(Some(format!("The worker stopped ({message}). Reload the page; the collection is kept in this browser.")));
                adding.set(false);
                progress.set(None);
                return;
            }
            force_cpu.set(Some(format!("the GPU failed ({message})")));
            error.set(Some(
                "The GPU failed: moving to the CPU backend. The collection is kept in this browser and comes back in a moment; images that were being added when it failed need adding again (the others are skipped as duplicates).".into(),
            ));
            adding.set(false);
            progress.set(None);
            booted.set(false);
            loaded.set(None);
            backend.set(None);
            worker.with_value(Worker::terminate);
            let fresh = Worker::new("./worker_loader.js").expect("the worker script is part of the app");
            handlers.with_value(|h| {
                if let Some((m, e)) = h {
                    fresh.set_onmessage(Some(m));
                    fresh.set_onerror(Some(e));
                }
            });
            worker.set_value(fresh);
        });
        let message_fn: js_sys::Function = onmessage.into_js_value().unchecked_into();
        let error_fn: js_sys::Function = onerror.into_js_value().unchecked_into();
        worker.with_value(|w| {
            w.set_onmessage(Some(&message_fn));
            w.set_onerror(Some(&error_fn));
        });
        handlers.set_value(Some((message_fn, error_fn)));

        spawn_local(async move {
            match fetch_catalog().await {
                Ok(c) => {
                    // The last model chosen in this browser (a stored one loads from here), else
                    // the default.
                    let last = local_storage().and_then(|s| s.get_item(LAST_MODEL).ok().flatten());
                    let known = |id: &String| id.starts_with(LOCAL_PREFIX) || c.models.iter().any(|m| &m.id == id);
                    model.set(last.filter(known).or_else(|| c.default_model().map(|m| m.id.clone())));
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
        let on_import = move |ev: leptos::ev::Event| {
            let input: HtmlInputElement = event_target(&ev);
            if let Some(file) = input.files().and_then(|l| l.get(0)) {
                if model_ready() {
                    status.set(format!("Importing {}…", file.name()));
                    send_request(&Request::Import { name: file.name() }, &[file]);
                } else {
                    error.set(Some("The model is still loading: import when it is ready.".into()));
                }
            }
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
            send_request(&request, &[file]);
        };
        let on_keydown = move |ev: KeyboardEvent| {
            if ev.key() == "Enter" {
                search_now(PAGE)
            }
        };
        let _ = window_event_listener(leptos::ev::keydown, move |ev| {
            if ev.key() == "Escape" {
                viewer.set(None);
            }
        });
        let clear_all = move |_| {
            let n = thumbs.with_untracked(Vec::len);
            let sure = web_sys::window()
                .and_then(|w| w.confirm_with_message(&format!("Remove all {n} images from this browser? Export first to keep them.")).ok())
                .unwrap_or(false);
            if sure {
                send_request(&Request::ClearCollection, &[]);
            }
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

        // The gallery shows the filtered collection, rendering only the rows in view.
        let filtered = Memo::new(move |_| {
            let filter = label_filter.get();
            classes.with(|c| {
                thumbs.with(|t| match (filter, c) {
                    (Some(l), Some(c)) => t.iter().filter(|t| c.rows.get(&t.id).is_some_and(|r| r.label == l)).cloned().collect(),
                    _ => t.clone(),
                })
            })
        });
        let columns = move || ((gallery_size.get().0 + PITCH - CELL) / PITCH).floor().max(1.0) as usize;
        let window = move || {
            let cols = columns();
            let n = filtered.with(Vec::len);
            let rows = n.div_ceil(cols);
            let first = ((scroll_top.get() / PITCH).floor() as usize).saturating_sub(2).min(rows);
            let last = (first + (gallery_size.get().1 / PITCH).ceil() as usize + 5).min(rows);
            (first, last, rows, cols)
        };
        let visible = move || {
            let (first, last, _, cols) = window();
            filtered.with(|t| t[(first * cols).min(t.len())..(last * cols).min(t.len())].to_vec())
        };
        let label_of = move |id: u64| {
            classes.with(|c| {
                let c = c.as_ref()?;
                let r = c.rows.get(&id)?;
                Some(format!("{} {:.0}%", c.labels[r.label], 100.0 * r.confidence))
            })
        };

        view! {
            <header>
                <h1>"Obscura"</h1>
                <span class="tag">"private image search — everything stays on this device"</span>
                <span class="spacer"></span>
                <span class="badge" data-testid="backend" title=move || backend.get().map(|b| b.1).unwrap_or_default()>
                    {move || match backend.get() {
                        // The short reason; the whole of it is in the title.
                        Some((b, detail)) => format!("{} · {}", b.label(), detail.split(" (").next().unwrap_or_default()),
                        None => "loading".into(),
                    }}
                </span>
            </header>
            <main>
                <ModelPanel state=models worker=worker
                    on_select=Callback::new(move |id: String| { model.set(Some(id)); load_model(); })
                    ready=Signal::derive(move || {
                        let id = model.get()?;
                        let base = models.base_of(&id)?;
                        (loaded.get().as_deref() == Some(base.as_str())).then_some(())?;
                        backend.get().map(|(b, _)| format!("{} on {}", models.name_of(&id), b.label()))
                    })/>
                <p class="status" role="status" data-testid="status">
                    {move || status.get()}
                    {move || download_progress.get().map(|(l, t, c)| {
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
                    <p>"Drop images, whole slides (SVS, pyramidal TIFF, a DICOM folder) or folders here, or "
                        <label class="button">"choose files"
                            <input type="file" multiple accept="image/*,.svs,.tif,.tiff,.dcm,.ndpi,.mrxs,.czi,.scn,.vsi,.isyntax" data-testid="file-input" on:change=on_pick/>
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
                                <button on:click=move |_| send_request(&Request::Cancel, &[])>"Cancel"</button>
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
                {move || viewer.get().and_then(|id| by_id.with_value(|m| m.get(&id).cloned()).map(|(name, url)| view! {
                    <aside class="viewer" data-testid="viewer" aria-label="Selected image">
                        <img src=url alt=name.clone()/>
                        <div>
                            <h2>{name.clone()}</h2>
                            <p>{move || label_of(id).unwrap_or_default()}</p>
                            <p class="muted">"The thumbnail kept in this browser; the original file is not stored."</p>
                            <button data-testid="remove" on:click=move |_| send_request(&Request::Remove { ids: vec![id] }, &[])>"Remove from collection"</button>
                            " "<button on:click=move |_| viewer.set(None)>"Close (Esc)"</button>
                        </div>
                    </aside>
                }))}
                {move || result_items().map(|(title, shown, n)| view! {
                    <section class="results">
                        <h2>{title}</h2>
                        <ol class="grid" on:keydown=move |ev| grid_keys(&ev)>
                            {shown.into_iter().map(|(h, name, url)| view! {
                                <li data-testid="result" data-file=name.clone() data-score=h.score.to_string()
                                    data-slide=origins.with_value(|m| m.get(&h.id).map(|o| o.slide.clone()))
                                    data-x=origins.with_value(|m| m.get(&h.id).map(|o| o.x.to_string()))
                                    data-y=origins.with_value(|m| m.get(&h.id).map(|o| o.y.to_string()))
                                    data-size=origins.with_value(|m| m.get(&h.id).map(|o| o.size.to_string()))>
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
                <section class="classify">
                    <h2>"Zero-shot classification"</h2>
                    <div class="classify-form">
                        <textarea data-testid="classify-labels" rows="4" placeholder="One label per line, e.g.\ntumour\nstroma\nlymphocytes"
                            prop:value=move || labels_text.get() on:input=move |ev| labels_text.set(event_target_value(&ev))></textarea>
                        <label>"Template "
                            <input type="text" data-testid="classify-template"
                                prop:value=move || class_template.get().or_else(template).unwrap_or_default()
                                on:input=move |ev| class_template.set(Some(event_target_value(&ev)))/>
                        </label>
                        <button data-testid="classify-run" on:click=move |_| classify()>"Classify"</button>
                    </div>
                    {move || classes.get().map(|c| {
                        let mut counts = vec![0usize; c.labels.len()];
                        for r in c.rows.values() { counts[r.label] += 1; }
                        let total = c.rows.len().max(1);
                        let stale = thumbs.with(Vec::len) != c.rows.len();
                        view! {
                            <ul class="bars">
                                {c.labels.iter().cloned().enumerate().map(|(i, l)| {
                                    let n = counts[i];
                                    view! {
                                        <li>
                                            <button data-testid="label-bar" data-label=l.clone() data-count=n.to_string()
                                                aria-pressed=move || (label_filter.get() == Some(i)).to_string()
                                                on:click=move |_| label_filter.update(|f| *f = if *f == Some(i) { None } else { Some(i) })
                                                title="Show only these images in the collection">
                                                <span class="bar-label">{l.clone()}</span>
                                                <meter min="0" max=total.to_string() value=n.to_string()></meter>
                                                <span class="bar-count">{n}</span>
                                            </button>
                                        </li>
                                    }
                                }).collect_view()}
                            </ul>
                            <p>
                                <button data-testid="export-csv" on:click=export_csv>"Export CSV"</button>
                                {stale.then_some(" The collection changed since: classify again to include every image.")}
                            </p>
                        }
                    })}
                </section>
                <section class="collection">
                    <h2>"Collection: " <span data-testid="image-count">{move || thumbs.with(Vec::len)}</span>" images"
                        {move || label_filter.get().and_then(|l| classes.with(|c| c.as_ref().map(|c| format!(" · showing {} ({})", c.labels[l], filtered.with(Vec::len)))))}
                    </h2>
                    <p class="toolbar">
                        <button data-testid="export" on:click=move |_| send_request(&Request::Export, &[])>"Export collection"</button>
                        " "<label class="button">"Import collection"
                            <input type="file" accept=".obscura" data-testid="import-input" on:change=on_import/>
                        </label>
                        " "<button data-testid="clear-all" on:click=clear_all>"Remove all images"</button>
                    </p>
                    <div class="gallery" node_ref=gallery on:scroll=move |_| measure()>
                        <div class="gallery-space" style:height=move || format!("{}px", window().2 as f64 * PITCH)>
                            <ul class="grid fixed" on:keydown=move |ev| grid_keys(&ev)
                                style:transform=move || format!("translateY({}px)", window().0 as f64 * PITCH)
                                style:grid-template-columns=move || format!("repeat({}, {CELL}px)", columns())>
                                <For each=visible key=|t| t.id let:t>
                                    <li data-testid="item" data-file=t.name.clone()>
                                        <button on:click=move |_| similar(t.id) title=format!("{}: find similar", t.name)>
                                            <img src=t.url.clone() alt=t.name.clone()/>
                                        </button>
                                        {move || label_of(t.id).map(|l| view! { <span class="name">{l}</span> })}
                                    </li>
                                </For>
                            </ul>
                        </div>
                    </div>
                </section>
            </main>
            <footer>
                <p>"Images, thumbnails and embeddings are computed and kept in this browser (its private storage for this site); nothing is uploaded. The only network requests fetch the app and the model's weights, from this site."</p>
                <p>{move || storage.get().map(|s| format!("Storage used by this site: {}. ", human_bytes(s)))}
                    <button on:click=move |_| { loaded.set(None); send_request(&Request::ClearModels, &[]) }>"Clear downloaded models"</button>
                </p>
            </footer>
        }
    }
}
