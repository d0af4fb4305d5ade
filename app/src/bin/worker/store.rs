//! The collection's persistence in OPFS: restoring it for the loaded model, saving new images
//! and the index, removing, clearing, exporting and importing.

use std::collections::HashMap;

use app::collection::{self, Header};
use app::opfs;
use app::{Event, Item};
use index::Index;
use js_sys::{Array, Uint8Array};
use wasm_bindgen::JsValue;
use web_sys::File;

use crate::add::{index_item, read};
use crate::state::{Entry, STATE, busy, header, post, post_with, scope, yield_now};

/// The loaded model's file names in OPFS: one collection per model manifest, so embeddings of
/// different models (or of a redeployed model) never mix.
fn file_names(header: &Header) -> (String, String) {
    collection_files(&header.manifest_sha256[..16])
}

/// The collection and index files of the model whose manifest sha256 starts with `key`.
pub(crate) fn collection_files(key: &str) -> (String, String) {
    (format!("{key}.collection"), format!("{key}.index"))
}

/// Opens the loaded model's stored collection (creating it), drops a torn tail, rebuilds the
/// worker's state from it and sends the images to the page.
pub(crate) async fn restore(header: Header) -> Result<(), String> {
    let (store, items, labels, dropped_tail) = match open_collection(&header).await {
        Ok(opened) => opened,
        Err(e) => {
            // No private storage (a browser without OPFS, another tab holding the file): the
            // app still works, for this tab only, and says so.
            post(&Event::Error {
                message: format!("This browser's storage could not be opened ({e}): images added now are kept only until the tab closes."),
            });
            (None, Vec::new(), HashMap::new(), false)
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
            let label = labels.get(&item.id).cloned();
            s.items.insert(item.id, Entry { hash: item.hash, name: item.name.clone(), embedding: item.embedding.clone(), label });
        }
        s.store = store;
    });
    // A rebuilt index holds its rows exactly until the graph is built, step by step.
    compact_in_background();
    post(&Event::Restored { count: items.len(), dropped_tail });
    for chunk in items.chunks(256) {
        send_items(chunk, true);
    }
    if !labels.is_empty() {
        post(&Event::Labelled { labels: labels.into_iter().map(|(id, l)| (id, Some(l))).collect() });
    }
    Ok(())
}

/// Opens the model's collection file (creating it) and reads it, cutting off a torn tail.
/// Returns the open file, the images in it and whether a tail was dropped.
async fn open_collection(header: &Header) -> Result<(Option<opfs::File>, Vec<collection::Item>, HashMap<u64, String>, bool), String> {
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
            Ok((Some(file), p.items, p.labels, p.torn))
        }
        None => {
            file.replace(&collection::header_bytes(header))?;
            Ok((Some(file), Vec::new(), HashMap::new(), false))
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
pub(crate) async fn save_index() {
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

/// Sets labels (`None`: unlabels), saves them and tells the page. Unknown ids and unchanged
/// labels are left out.
pub(crate) fn set_labels(changes: Vec<(u64, Option<String>)>) {
    let mut bytes = Vec::new();
    let mut changed = Vec::new();
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        for (id, label) in changes {
            if let Some(e) = s.items.get_mut(&id) {
                if e.label != label {
                    collection::label_record(id, label.as_deref(), &mut bytes);
                    e.label = label.clone();
                    changed.push((id, label));
                }
            }
        }
    });
    if !changed.is_empty() {
        persist(&bytes);
        post(&Event::Labelled { labels: changed });
    }
}

/// Saves, then shows, a batch of new images.
pub(crate) fn commit(items: &[collection::Item]) {
    let mut bytes = Vec::new();
    for item in items {
        collection::add_record(item, &mut bytes);
    }
    persist(&bytes);
    send_items(items, false);
    compact_in_background();
}

pub(crate) async fn remove(ids: Vec<u64>) -> Result<(), String> {
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

pub(crate) async fn clear_collection() -> Result<(), String> {
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

pub(crate) async fn export() -> Result<(), String> {
    busy()?;
    let header = header()?;
    let stored = STATE
        .with(|s| s.borrow().store.as_ref().map(|f| f.read_all()))
        .ok_or("this browser's storage is not open")??;
    let parsed = collection::parse(&stored).map_err(|e| e.to_string())?;
    let items: Vec<&collection::Item> = parsed.items.iter().collect();
    let bytes = collection::write_labelled(&header, &items, &parsed.labels);
    let file_name = format!("obscura-{}-{}-images.obscura", header.model.replace('/', "-"), items.len());
    post_with(&Event::Exported { file_name, count: items.len() }, Some(&Uint8Array::from(&bytes[..])));
    Ok(())
}

pub(crate) async fn import(files: Vec<File>, name: String) -> Result<(), String> {
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
        let mut labels = Vec::new();
        for item in chunk {
            if STATE.with(|s| s.borrow().hashes.contains_key(&item.hash)) {
                duplicates += 1;
                // Already here: the file's label (if any) goes to the image that is.
                if let Some(l) = parsed.labels.get(&item.id) {
                    if let Some(id) = STATE.with(|s| s.borrow().items.iter().find(|(_, e)| e.hash == item.hash).map(|(&id, _)| id)) {
                        labels.push((id, Some(l.clone())));
                    }
                }
                continue;
            }
            let new = index_item(item.name.clone(), item.hash, item.thumb.clone(), item.embedding.clone(), item.origin.clone());
            // Imported images get new ids; their labels follow them.
            if let Some(l) = parsed.labels.get(&item.id) {
                labels.push((new.id, Some(l.clone())));
            }
            fresh.push(new);
        }
        added += fresh.len();
        commit(&fresh);
        set_labels(labels);
        yield_now().await;
    }
    compact_in_background();
    save_index().await;
    post(&Event::Imported { name, added, duplicates });
    Ok(())
}
