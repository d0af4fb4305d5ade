//! Worker events → signals: the one place the page reacts to what the worker says.

use app::{Event, LOCAL_PREFIX, human_bytes, human_seconds};
use js_sys::{Array, Uint8Array};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Blob, BlobPropertyBag, File, MessageEvent, Url};

use super::model_panel::ImportProgress;
use super::state::{Classes, Ctx, LAST_MODEL, Progress, Thumb, blob_url, download, local_storage};

pub fn on_message(ctx: Ctx, msg: MessageEvent) {
    let data = Array::from(&msg.data());
    let Some(text) = data.get(0).as_string() else { return };
    let event = match serde_json::from_str::<Event>(&text) {
        Ok(e) => e,
        Err(e) => {
            web_sys::console::error_1(&format!("a worker message the page cannot read ({e}): {}", &text[..text.len().min(200)]).into());
            return;
        }
    };
    let models = ctx.models;
    let default_model = move || models.catalog.with_untracked(|c| c.as_ref().and_then(|c| c.default_model().map(|m| m.id.clone())));
    match event {
        Event::Booted => {
            ctx.booted.set(true);
            super::spawn::keep_offline(ctx.threaded.get_value());
            ctx.send(&app::Request::ListModels, &[]);
            ctx.load_model();
        }
        Event::LocalModels { models: list } => {
            let current = models.model.get_untracked().unwrap_or_default();
            let gone = current.starts_with(LOCAL_PREFIX) && !list.iter().any(|m| m.base() == current);
            models.local.set(list);
            if gone {
                // The selected stored model was removed: back to the app's default.
                if let Some(s) = local_storage() {
                    let _ = s.remove_item(LAST_MODEL);
                }
                ctx.loaded.set(None);
                ctx.backend.set(None);
                models.model.set(default_model());
                ctx.load_model();
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
            models.model.set(Some(m.base()));
            ctx.load_model();
        }
        Event::ImportFailed { message } => {
            models.importing.set(false);
            models.progress.set(None);
            models.import_error.set(Some(message));
        }
        Event::Download { loaded, total, cached } => ctx.download_progress.set(Some((loaded, total, cached))),
        Event::ModelReady { backend: b, detail, millis, .. } => {
            ctx.backend.set(Some((b, detail)));
            ctx.download_progress.set(None);
            ctx.status.set(format!("Model ready in {}", human_seconds(millis / 1000.0)));
            ctx.refresh_storage();
        }
        Event::ModelFailed { base, message } => {
            ctx.loaded.set(None);
            ctx.download_progress.set(None);
            models.failed.set(Some(message.clone()));
            ctx.error.set(Some(format!("Could not load {base}: {message}")));
            ctx.status.set("No model loaded".into());
            if base.starts_with(LOCAL_PREFIX) {
                // A stored model that is gone: back to the app's default.
                if let Some(s) = local_storage() {
                    let _ = s.remove_item(LAST_MODEL);
                }
                let fallback = default_model();
                if fallback.is_some() && fallback != models.model.get_untracked() {
                    models.model.set(fallback);
                    ctx.load_model();
                }
            }
        }
        Event::BackendChanged { backend: b, detail } => {
            ctx.error.set(Some(format!("Moved to the {} backend: {detail}. The collection is unchanged.", b.label())));
            ctx.backend.set(Some((b, detail)));
        }
        Event::Restored { count, dropped_tail } => {
            let queued = ctx.waiting.try_update_value(std::mem::take).unwrap_or_default();
            if !queued.is_empty() {
                let (names, files): (Vec<String>, Vec<File>) = queued.into_iter().unzip();
                ctx.skipped.set(Vec::new());
                ctx.adding.set(true);
                ctx.progress.set(Some(Progress { done: 0, total: files.len(), per_second: 0.0 }));
                ctx.send(&app::Request::Add { names }, &files);
            }
            if count > 0 {
                ctx.status.set(format!("{count} images restored from this browser's storage"));
            }
            if dropped_tail {
                ctx.error.set(Some("The last images being added when the tab closed were not saved; add them again.".into()));
            }
        }
        Event::Added { items, restored: _ } => {
            let new: Vec<Thumb> = items
                .into_iter()
                .enumerate()
                .map(|(k, item)| {
                    let url = data.get(k as u32 + 1).dyn_into::<Uint8Array>().map(|b| blob_url(&b, "image/jpeg")).unwrap_or_default();
                    if let Some(o) = item.origin {
                        ctx.origins.update_value(|m| {
                            m.insert(item.id, o);
                        });
                    }
                    Thumb { id: item.id, name: item.name, url }
                })
                .collect();
            ctx.by_id.update_value(|m| {
                for t in &new {
                    m.insert(t.id, (t.name.clone(), t.url.clone()));
                }
            });
            ctx.thumbs.update(|t| t.extend(new));
        }
        Event::Labelled { labels } => ctx.labels.update(|m| {
            for (id, label) in labels {
                match label {
                    Some(l) => m.insert(id, l),
                    None => m.remove(&id),
                };
            }
        }),
        Event::Removed { ids } => {
            let gone: std::collections::HashSet<u64> = ids.into_iter().collect();
            ctx.thumbs.update(|t| {
                t.retain(|t| {
                    let keep = !gone.contains(&t.id);
                    if !keep {
                        Url::revoke_object_url(&t.url).unwrap_or_default();
                    }
                    keep
                })
            });
            ctx.by_id.update_value(|m| m.retain(|id, _| !gone.contains(id)));
            ctx.origins.update_value(|m| m.retain(|id, _| !gone.contains(id)));
            ctx.labels.update(|m| m.retain(|id, _| !gone.contains(id)));
            // The map showed those images; the evaluations stay, as records of what was measured.
            ctx.lab.map.set(None);
            ctx.classes.update(|c| {
                if let Some(c) = c {
                    c.rows.retain(|id, _| !gone.contains(id));
                }
            });
            if ctx.thumbs.with_untracked(Vec::is_empty) {
                ctx.results.set(None);
                ctx.classes.set(None);
                ctx.filter.set(None);
            } else {
                ctx.results.update(|r| {
                    if let Some((_, hits)) = r {
                        hits.retain(|h| !gone.contains(&h.id));
                    }
                });
            }
            if ctx.viewer.get_untracked().is_some_and(|v| gone.contains(&v)) {
                ctx.viewer.set(None);
            }
            ctx.status.set(format!("{} images removed", gone.len()));
            ctx.refresh_storage();
        }
        Event::Skipped { name, reason } => ctx.skipped.update(|s| s.push((name, reason))),
        Event::Indexing { done, total, per_second } => ctx.progress.set(Some(Progress { done, total, per_second })),
        Event::SlideOpened { name, format, width, height, mpp, target_mpp, level, patches, tissue, associated } => {
            let hidden = if associated.is_empty() { String::new() } else { format!("; its {} image(s) are not shown", associated.join(", ")) };
            ctx.status.set(format!(
                "{name}: {format}, {width}×{height} px at {mpp:.3} µm/px, {:.0}% tissue: {patches} patches at {target_mpp} µm/px from level {level}{hidden}",
                100.0 * tissue
            ));
            ctx.progress.set(Some(Progress { done: 0, total: patches, per_second: 0.0 }));
        }
        Event::Finished { added, skipped: n, cancelled, seconds } => {
            ctx.adding.set(false);
            ctx.progress.set(None);
            let rate = added as f64 / seconds.max(1e-3);
            ctx.status.set(format!(
                "{} {added} images in {} ({rate:.1}/s){}",
                if cancelled { "Cancelled after" } else { "Indexed" },
                human_seconds(seconds),
                if n > 0 { format!(", {n} skipped") } else { String::new() }
            ));
            ctx.refresh_storage();
        }
        Event::Results { query, hits } => ctx.results.set(Some((query, hits))),
        Event::Classified { labels, rows } => {
            ctx.status.set(format!("Classified {} images", rows.len()));
            ctx.classes.set(Some(Classes { labels, rows: rows.into_iter().map(|r| (r.id, r)).collect() }));
        }
        Event::LabProgress { stage, done, total } => ctx.lab.running.set(Some((stage, done, total))),
        // A result for a model that is no longer loaded (the user switched meanwhile) is dropped.
        Event::Evaluated { base, .. } | Event::Mapped { base, .. } if ctx.loaded.get_untracked().as_deref() != Some(base.as_str()) => {
            ctx.lab.running.set(None);
        }
        Event::Evaluated { ids, report, seconds, .. } => {
            let key = models.model.get_untracked().unwrap_or_default();
            let model = match models.local_model(&key) {
                Some(m) => format!("{} {}", m.name, m.dtype),
                None => models.name_of(&key),
            };
            let backend = ctx.backend.get_untracked().map(|(b, _)| b.label().to_string()).unwrap_or_default();
            ctx.status.set(format!("Evaluated {} labelled images in {}", ids.len(), human_seconds(seconds)));
            ctx.lab.evaluated(super::lab::Evaluation { key, model, backend, ids, report });
        }
        Event::Mapped { method, ids, points, seconds, trustworthiness, k, .. } => {
            ctx.status.set(format!("{} map of {} images in {}", method.to_uppercase(), ids.len(), human_seconds(seconds)));
            ctx.lab.mapped(super::lab::MapData { method, ids, points, trustworthiness, k });
        }
        Event::LabFailed { message } => {
            ctx.lab.running.set(None);
            ctx.error.set(Some(message));
        }
        Event::Exported { file_name, count } => {
            if let Ok(bytes) = data.get(1).dyn_into::<Uint8Array>() {
                let opts = BlobPropertyBag::new();
                opts.set_type("application/octet-stream");
                if let Ok(blob) = Blob::new_with_u8_array_sequence_and_options(&Array::of1(&bytes), &opts) {
                    download(&blob, &file_name);
                    ctx.status.set(format!("Exported {count} images to {file_name}"));
                }
            }
        }
        Event::Imported { name, added, duplicates } => {
            ctx.status.set(format!(
                "Imported {added} images from {name}{}",
                if duplicates > 0 { format!(" ({duplicates} already here)") } else { String::new() }
            ));
            ctx.refresh_storage();
        }
        Event::ModelsCleared => {
            ctx.status.set("Downloaded models cleared".into());
            ctx.refresh_storage();
        }
        Event::Error { message } => ctx.error.set(Some(message)),
    }
}
