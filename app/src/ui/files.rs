//! Files from pickers and drops, folders walked recursively. Names are paths within what was
//! chosen (`slides/case-3/tile.png`), so identical file names in two folders stay apart.

use std::future::Future;

use js_sys::{Array, Function, Promise};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DataTransfer, File, FileList, FileSystemDirectoryEntry, FileSystemEntry, FileSystemFileEntry};

fn path_of(file: &File) -> String {
    // `webkitRelativePath` is set for folder pickers and empty otherwise.
    js_sys::Reflect::get(file, &"webkitRelativePath".into())
        .ok()
        .and_then(|v| v.as_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| file.name())
}

pub fn from_list(list: &FileList) -> Vec<(String, File)> {
    (0..list.length()).filter_map(|i| list.get(i)).map(|f| (path_of(&f), f)).collect()
}

/// Entries must be taken from the DataTransfer during the drop event; reading them is async.
pub fn from_drop(dt: &DataTransfer) -> impl Future<Output = Vec<(String, File)>> + use<> {
    let items = dt.items();
    let mut entries = Vec::new();
    let mut plain = Vec::new();
    for i in 0..items.length() {
        let Some(item) = items.get(i) else { continue };
        if item.kind() != "file" {
            continue;
        }
        match item.webkit_get_as_entry() {
            Ok(Some(entry)) => entries.push(entry),
            _ => plain.extend(item.get_as_file().ok().flatten()),
        }
    }
    async move {
        let mut out: Vec<(String, File)> = plain.into_iter().map(|f| (f.name(), f)).collect();
        for entry in entries {
            walk(entry, &mut out).await;
        }
        out
    }
}

async fn walk(root: FileSystemEntry, out: &mut Vec<(String, File)>) {
    let mut stack = vec![root];
    while let Some(entry) = stack.pop() {
        let path = entry.full_path().trim_start_matches('/').to_string();
        if entry.is_file() {
            let entry: FileSystemFileEntry = entry.unchecked_into();
            let p = Promise::new(&mut |resolve: Function, reject: Function| entry.file_with_callback_and_callback(&resolve, &reject));
            if let Ok(f) = JsFuture::from(p).await.and_then(|f| f.dyn_into::<File>()) {
                out.push((path, f));
            }
        } else if entry.is_directory() {
            let dir: FileSystemDirectoryEntry = entry.unchecked_into();
            let reader = dir.create_reader();
            // readEntries returns at most ~100 entries per call: call until it returns none.
            loop {
                let p = Promise::new(&mut |resolve: Function, reject: Function| {
                    let _ = reader.read_entries_with_callback_and_callback(&resolve, &reject);
                });
                let Ok(batch) = JsFuture::from(p).await else { break };
                let batch = Array::from(&batch);
                if batch.length() == 0 {
                    break;
                }
                let mut children: Vec<FileSystemEntry> = batch.iter().filter_map(|e| e.dyn_into().ok()).collect();
                children.reverse();
                stack.extend(children);
            }
        }
    }
}
