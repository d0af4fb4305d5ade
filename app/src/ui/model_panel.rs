//! The model view: the picker (the catalog's models and those stored on this device), the
//! selected model's status, and "Add a model from this computer" (files or a folder, dtype,
//! progress per stage with time left and Cancel, the fidelity check, and for a stored model its
//! details, editable prompt templates and Remove). Worker events fill [`ModelState`] (`events.rs`).

use app::{Catalog, FidelityReport, LOCAL_PREFIX, LocalModel, Request, human_bytes, human_seconds};
use leptos::prelude::*;
use web_sys::{DragEvent, File, HtmlInputElement, Worker};

use super::files;

/// Where an import is: stage, done, total, and when the stage started (ms).
#[derive(Clone, Debug, PartialEq)]
pub struct ImportProgress {
    pub stage: String,
    pub done: u64,
    pub total: u64,
    pub started: f64,
}

/// The signals of the model view, shared with the event loop in `events.rs`.
#[derive(Clone, Copy)]
pub struct ModelState {
    pub catalog: RwSignal<Option<Catalog>>,
    /// The chosen model: a catalog id, or `local/<key>` for a stored one.
    pub model: RwSignal<Option<String>>,
    pub local: RwSignal<Vec<LocalModel>>,
    pub importing: RwSignal<bool>,
    pub progress: RwSignal<Option<ImportProgress>>,
    pub check: RwSignal<Option<(FidelityReport, bool)>>,
    pub import_error: RwSignal<Option<String>>,
    pub import_note: RwSignal<Option<String>>,
    /// Seconds and the worker's peak wasm memory of the last import.
    pub import_stats: RwSignal<Option<(f64, u64)>>,
    pub dtype: RwSignal<String>,
    /// The reason the last load failed, for the status line.
    pub failed: RwSignal<Option<String>>,
}

impl ModelState {
    pub fn new() -> Self {
        Self {
            catalog: RwSignal::new(None),
            model: RwSignal::new(None),
            local: RwSignal::new(Vec::new()),
            importing: RwSignal::new(false),
            progress: RwSignal::new(None),
            check: RwSignal::new(None),
            import_error: RwSignal::new(None),
            import_note: RwSignal::new(None),
            import_stats: RwSignal::new(None),
            dtype: RwSignal::new("q8".into()),
            failed: RwSignal::new(None),
        }
    }

    /// The stored model `id` names, if it is one.
    pub fn local_model(&self, id: &str) -> Option<LocalModel> {
        let key = id.strip_prefix(LOCAL_PREFIX)?;
        self.local.with(|l| l.iter().find(|m| m.key == key).cloned())
    }

    /// The `base` the worker loads for model `id`.
    pub fn base_of(&self, id: &str) -> Option<String> {
        if id.starts_with(LOCAL_PREFIX) {
            return Some(id.to_string());
        }
        self.catalog.with(|c| c.as_ref()?.models.iter().find(|m| m.id == id).map(|m| format!("models/{}", m.preferred().path)))
    }

    /// Display name of model `id`.
    pub fn name_of(&self, id: &str) -> String {
        if let Some(m) = self.local_model(id) {
            return m.name;
        }
        self.catalog.with(|c| c.as_ref().and_then(|c| c.models.iter().find(|m| m.id == id).map(|m| m.name.clone()))).unwrap_or_else(|| id.to_string())
    }

    /// Every prompt template of model `id`.
    pub fn templates_of(&self, id: &str) -> Vec<String> {
        if id.starts_with(LOCAL_PREFIX) {
            return self.local_model(id).map(|m| m.templates).unwrap_or_default();
        }
        self.catalog.with(|c| c.as_ref().and_then(|c| c.models.iter().find(|m| m.id == id).map(|m| m.templates.clone()))).unwrap_or_default()
    }

    /// The first prompt template of model `id`.
    pub fn template_of(&self, id: &str) -> Option<String> {
        if id.starts_with(LOCAL_PREFIX) {
            return self.local_model(id)?.templates.first().cloned();
        }
        self.catalog.with(|c| c.as_ref()?.models.iter().find(|m| m.id == id)?.templates.first().cloned())
    }
}

const STAGES: [(&str, &str); 4] = [("read", "Reading"), ("convert", "Converting"), ("check", "Checking fidelity"), ("store", "Storing")];

/// The picker, the status and the import form.
#[component]
pub fn ModelPanel(
    state: ModelState,
    worker: StoredValue<Option<Worker>, LocalStorage>,
    /// Selected model → load it.
    on_select: Callback<String>,
    /// `Some(text)` while the selected model is ready, with what runs it.
    ready: Signal<Option<String>>,
) -> impl IntoView {
    let send = move |request: &Request, files: &[File]| worker.with_value(|w| {
        if let Some(w) = w {
            super::send(w, request, files);
        }
    });
    let folder_input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(el) = folder_input.get() {
            let _ = el.set_attribute("webkitdirectory", "");
        }
    });
    let start = move |list: Vec<(String, File)>| {
        if list.is_empty() {
            return;
        }
        if state.importing.get_untracked() {
            state.import_error.set(Some("A model is already being added: wait for it or cancel it.".into()));
            return;
        }
        let (names, files): (Vec<String>, Vec<File>) = list.into_iter().unzip();
        state.importing.set(true);
        state.import_error.set(None);
        state.import_note.set(None);
        state.check.set(None);
        state.progress.set(Some(ImportProgress { stage: "read".into(), done: 0, total: 1, started: js_sys::Date::now() }));
        send(&Request::ImportModel { names, dtype: state.dtype.get_untracked() }, &files);
    };
    let on_pick = move |ev: leptos::ev::Event| {
        let input: HtmlInputElement = event_target(&ev);
        let list = input.files().map(|l| files::from_list(&l)).unwrap_or_default();
        start(list);
        input.set_value("");
    };
    let on_drop = move |ev: DragEvent| {
        ev.prevent_default();
        ev.stop_propagation();
        let Some(dt) = ev.data_transfer() else { return };
        let pending = files::from_drop(&dt);
        leptos::task::spawn_local(async move { start(pending.await) });
    };
    // Opened whenever there is something to show; never closed under the user.
    let details = NodeRef::<leptos::html::Details>::new();
    Effect::new(move |_| {
        let show = state.importing.get() || state.import_error.get().is_some() || state.check.get().is_some() || state.import_note.get().is_some();
        if let (true, Some(el)) = (show, details.get()) {
            el.set_open(true);
        }
    });
    let templates_text = RwSignal::new(String::new());
    // The selected stored model's templates, editable.
    Effect::new(move |_| {
        let id = state.model.get().unwrap_or_default();
        templates_text.set(state.local_model(&id).map(|m| m.templates.join("\n")).unwrap_or_default());
    });
    let selected_local = move || state.model.get().and_then(|id| state.local_model(&id));

    view! {
        <section class="models" data-testid="model-panel"
            on:dragover=move |ev: DragEvent| ev.prevent_default()
            on:drop=on_drop>
            <label>"Model "
                <select data-testid="model-picker" on:change=move |ev| on_select.run(event_target_value(&ev))>
                    {move || state.catalog.get().map(|c| view! {
                        <optgroup label="Served with this app">
                            {c.models.into_iter().map(|m| {
                                let selected = state.model.get().as_deref() == Some(m.id.as_str());
                                let v = m.preferred().clone();
                                view! { <option value=m.id.clone() selected=selected>{format!("{} ({}, {})", m.name, v.dtype, human_bytes(v.bytes))}</option> }
                            }).collect_view()}
                        </optgroup>
                    })}
                    {move || (!state.local.with(Vec::is_empty)).then(|| view! {
                        <optgroup label="On this device">
                            {state.local.get().into_iter().map(|m| {
                                let id = m.base();
                                let selected = state.model.get().as_deref() == Some(id.as_str());
                                view! { <option value=id selected=selected>{format!("{} ({}, {}) · on this device", m.name, m.dtype, human_bytes(m.bytes))}</option> }
                            }).collect_view()}
                        </optgroup>
                    })}
                </select>
            </label>
            " "
            <span class="model-status" data-testid="model-status">
                {move || match (ready.get(), state.failed.get()) {
                    (Some(text), _) => format!("ready · {text}"),
                    (None, Some(why)) => format!("not loaded: {why}"),
                    (None, None) => match state.model.get() {
                        Some(id) => format!("loading {}…", state.name_of(&id)),
                        None => "no model chosen".into(),
                    },
                }}
            </span>
            <details class="add-model" node_ref=details>
                <summary>"Add a model from this computer"</summary>
                <p class="muted">"A Hugging Face CLIP checkpoint (config.json, model.safetensors or pytorch_model.bin, tokenizer.json), an OpenCLIP one (open_clip_config.json and its weights) or a converted model (manifest.json). It is converted here, in this tab, and kept in this browser: nothing is uploaded."</p>
                <p>
                    <label>"Store as "
                        <select data-testid="model-dtype" on:change=move |ev| state.dtype.set(event_target_value(&ev))>
                            {["q8", "q4", "f16", "f32"].into_iter().map(|d| {
                                let label = match d {
                                    "q8" => "q8 (int8, ¼ of f32; cosine ≥ 0.995)",
                                    "q4" => "q4 (4-bit, ~⅙ of f32; cosine ≥ 0.98)",
                                    "f16" => "f16 (½ of f32)",
                                    _ => "f32 (as is)",
                                };
                                view! { <option value=d selected=move || state.dtype.get() == d>{label}</option> }
                            }).collect_view()}
                        </select>
                    </label>
                    " "
                    <label class="button">"choose files"
                        <input type="file" multiple data-testid="model-import" on:change=on_pick disabled=move || state.importing.get()/>
                    </label>
                    " "
                    <label class="button">"choose a folder"
                        <input type="file" multiple data-testid="model-import-folder" node_ref=folder_input on:change=on_pick disabled=move || state.importing.get()/>
                    </label>
                    " or drop them here."
                </p>
                {move || state.progress.get().map(|p| {
                    let label = STAGES.iter().find(|s| s.0 == p.stage).map_or(p.stage.clone(), |s| s.1.to_string());
                    let frac = if p.total > 0 { p.done as f64 / p.total as f64 } else { 0.0 };
                    let elapsed = (js_sys::Date::now() - p.started) / 1000.0;
                    let left = if frac > 0.02 { Some(elapsed / frac - elapsed) } else { None };
                    let amount = if p.stage == "check" { format!("step {} of {}", p.done, p.total) } else { format!("{} of {}", human_bytes(p.done), human_bytes(p.total)) };
                    view! {
                        <p class="progress" data-testid="model-import-progress" data-stage=p.stage.clone()>
                            {label}" "
                            <progress max=p.total.to_string() value=p.done.to_string()></progress>
                            {format!(" {amount} ({:.0}%){} ", 100.0 * frac, left.map(|l| format!(", {} left", human_seconds(l))).unwrap_or_default())}
                            <button data-testid="model-import-cancel" on:click=move |_| send(&Request::Cancel, &[])>"Cancel"</button>
                        </p>
                    }
                })}
                {move || state.check.get().map(|(f, passes)| view! {
                    <p class=if passes { "fidelity" } else { "fidelity error" } data-testid="model-fidelity" data-passes=passes.to_string()>
                        {format!(
                            "Fidelity against the unconverted weights on the bundled images and prompts: min cosine images {:.5}, texts {:.5}; zero-shot agreement {:.0}%. {}",
                            f.image_min, f.text_min, 100.0 * f.agreement,
                            if passes { format!("Above the bound of {}.", f.dtype_required) } else { format!("Below the bound of {}: this conversion changes what the model finds.", f.dtype_required) }
                        )}
                        {(!passes).then(|| view! {
                            " "<button data-testid="model-keep" on:click=move |_| { state.check.set(None); state.importing.set(true); send(&Request::KeepImport, &[]) }>"Use it anyway"</button>
                            " "<button data-testid="model-discard" on:click=move |_| { state.check.set(None); send(&Request::DiscardImport, &[]) }>"Discard"</button>
                        })}
                    </p>
                })}
                {move || state.import_note.get().map(|n| {
                    let (seconds, memory) = state.import_stats.get().unwrap_or_default();
                    view! {
                        <p class="note" data-testid="model-import-note" data-seconds=seconds.to_string() data-wasm-memory=memory.to_string()>
                            {n}{format!(" ({}, worker memory {})", human_seconds(seconds), human_bytes(memory))}
                        </p>
                    }
                })}
                {move || state.import_error.get().map(|e| view! {
                    <p class="error" role="alert" data-testid="model-import-error">{e}" "<button on:click=move |_| state.import_error.set(None)>"dismiss"</button></p>
                })}
            </details>
            {move || selected_local().map(|m| {
                let key = m.key.clone();
                let key2 = m.key.clone();
                view! {
                    <div class="model-details" data-testid="model-details">
                        <p>{format!("{} · from {} · {} · {} · licence: {}", m.name, m.source, m.dtype, human_bytes(m.bytes), m.license)}
                            {m.fidelity.map(|f| format!(" · fidelity: min cosine {:.4}", f.image_min.min(f.text_min)))}</p>
                        <label>"Prompt templates (one per line, {} stands for the label) "
                            <textarea data-testid="model-templates" rows="2" prop:value=move || templates_text.get()
                                on:input=move |ev| templates_text.set(event_target_value(&ev))></textarea>
                        </label>
                        <button on:click=move |_| {
                            let templates: Vec<String> = templates_text.get_untracked().lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
                            send(&Request::SetTemplates { key: key.clone(), templates }, &[]);
                        }>"Save templates"</button>
                        " "
                        <button data-testid="model-remove" on:click=move |_| {
                            let sure = web_sys::window()
                                .and_then(|w| w.confirm_with_message("Remove this model and its collection from this browser?").ok())
                                .unwrap_or(false);
                            if sure {
                                send(&Request::RemoveModel { key: key2.clone() }, &[]);
                            }
                        }>"Remove"</button>
                    </div>
                }
            })}
        </section>
    }
}
