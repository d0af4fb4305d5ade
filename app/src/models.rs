//! Models added from this computer (worker side): the dropped files as lazily read
//! [`model_wasm::Source`]s, and the models' store in the origin-private file system.
//!
//! Each stored model is a folder `obscura-models/<key>/` holding the converted model as
//! `weights-tool convert` writes it (`manifest.json`, shards, `tokenizer.json`) plus `local.json`
//! (the [`LocalModel`] the picker shows), written last: a folder without it is an import that did
//! not finish (a full disk, a closed tab) and is removed when the models are listed.

use std::rc::Rc;

use js_sys::Uint8Array;
use model_wasm::checkpoint::Files;
use model_wasm::{Error, Source};
use web_sys::{File, FileReaderSync, FileSystemDirectoryHandle};

use crate::LocalModel;
use crate::opfs;

/// The OPFS folder of stored models.
pub const DIR: &str = "obscura-models";
/// The file that marks a complete stored model.
pub const LOCAL_JSON: &str = "local.json";

/// A dropped `File`, read in slices with `FileReaderSync` (dedicated workers only): the file is
/// never copied whole into wasm memory.
pub struct WebFile {
    file: File,
    name: String,
    reader: FileReaderSync,
}

impl WebFile {
    pub fn source(file: File, name: String) -> Result<Rc<dyn Source>, String> {
        let reader = FileReaderSync::new().map_err(|e| format!("FileReaderSync: {e:?}"))?;
        Ok(Rc::new(Self { file, name, reader }))
    }
}

impl Source for WebFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.file.size() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> model_wasm::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.len() {
            return Err(model_wasm::checkpoint::past_end(&self.name, offset, buf.len(), self.len()));
        }
        let fail = |e: wasm_bindgen::JsValue| Error::Weights {
            file: self.name.clone(),
            reason: format!("could not be read ({e:?}); was it moved or changed since it was chosen?"),
        };
        let blob = self.file.slice_with_f64_and_f64(offset as f64, end as f64).map_err(fail)?;
        let array = self.reader.read_as_array_buffer(&blob).map_err(fail)?;
        let view = Uint8Array::new(&array);
        if view.length() as usize != buf.len() {
            return Err(fail(format!("{} of {} bytes", view.length(), buf.len()).into()));
        }
        view.copy_to(buf);
        Ok(())
    }
}

/// The dropped files by name, and the name of what was dropped: the folder's, else the
/// checkpoint's own (`_name_or_path` in config.json), else the weights file's stem when it is
/// not a generic one.
pub fn folder(files: Vec<File>, names: &[String]) -> Result<(Files, String), String> {
    let mut out = Files::default();
    let mut source = None;
    for (i, f) in files.into_iter().enumerate() {
        let path = names.get(i).cloned().unwrap_or_else(|| f.name());
        if source.is_none() {
            source = path.split_once('/').map(|(d, _)| d.to_string());
        }
        out.insert(&path, WebFile::source(f, path.clone())?);
    }
    let source = source.or_else(|| {
        let config = out.0.get("config.json")?.read_all().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&config).ok()?;
        v.get("_name_or_path")?.as_str().filter(|s| !s.is_empty()).map(|s| s.trim_end_matches('/').to_string())
    });
    let source = source.unwrap_or_else(|| {
        let mut names: Vec<&String> = out.0.keys().collect();
        names.sort();
        let weights = names.iter().find(|n| n.ends_with(".safetensors") || n.ends_with(".bin")).or(names.first());
        let stem = weights.map_or("model", |n| n.rsplit_once('.').map_or(n.as_str(), |(s, _)| s));
        const GENERIC: [&str; 5] = ["model", "pytorch_model", "open_clip_pytorch_model", "open_clip_model", "manifest"];
        if GENERIC.contains(&stem) {
            if out.0.contains_key(model_wasm::openclip::CONFIG) { "OpenCLIP model".into() } else { "CLIP model".into() }
        } else {
            stem.to_string()
        }
    });
    Ok((out, source))
}

async fn root() -> Result<FileSystemDirectoryHandle, String> {
    opfs::subdir(None, DIR, true).await?.ok_or_else(|| format!("{DIR} could not be created"))
}

async fn model_dir(key: &str) -> Result<Option<FileSystemDirectoryHandle>, String> {
    opfs::subdir(Some(&root().await?), key, false).await
}

/// The stored models, in the order they were added; unfinished imports are removed.
pub async fn list() -> Result<Vec<LocalModel>, String> {
    let root = root().await?;
    let mut out = Vec::new();
    for key in opfs::list(&root).await {
        let Some(dir) = opfs::subdir(Some(&root), &key, false).await? else { continue };
        match opfs::read_in(&dir, LOCAL_JSON).await.ok().flatten().and_then(|b| serde_json::from_slice::<LocalModel>(&b).ok()) {
            Some(m) => out.push(m),
            None => {
                web_sys::console::warn_1(&format!("removing an unfinished model import ({key})").into());
                let _ = opfs::remove_in(&root, &key).await;
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The stored model `key`, if complete.
pub async fn get(key: &str) -> Result<Option<LocalModel>, String> {
    let Some(dir) = model_dir(key).await? else { return Ok(None) };
    Ok(opfs::read_in(&dir, LOCAL_JSON).await?.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Stores a model's files, then its `local.json`. On any failure (quota, disk) everything of it
/// is removed again and the error says what happened.
pub async fn store(model: &LocalModel, files: &[(&str, &[u8])], mut progress: impl FnMut(u64, u64)) -> Result<(), String> {
    let root = root().await?;
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let mut done = 0;
    let result = async {
        let dir = opfs::subdir(Some(&root), &model.key, true).await?.ok_or("could not create the model's folder")?;
        for (name, bytes) in files {
            opfs::write_in(&dir, name, bytes).await?;
            done += bytes.len() as u64;
            progress(done, total);
        }
        let json = serde_json::to_vec_pretty(model).map_err(|e| e.to_string())?;
        opfs::write_in(&dir, LOCAL_JSON, &json).await
    }
    .await;
    if let Err(e) = result {
        let _ = opfs::remove_in(&root, &model.key).await;
        let quota = e.contains("Quota") || e.contains("quota") || e.contains("disk is full");
        return Err(if quota {
            format!(
                "this browser's storage is full: the model needs {} and could not be kept ({e}). Nothing of it was left behind; free some space (Clear downloaded models, or remove a model) or choose a smaller dtype",
                crate::human_bytes(total)
            )
        } else {
            format!("the model could not be stored ({e}); nothing of it was left behind")
        });
    }
    Ok(())
}

/// A stored model's files: `manifest.json` (bytes), tokenizer, and shards by name.
pub async fn read(key: &str) -> Result<(Vec<u8>, Vec<u8>, std::collections::HashMap<String, Vec<u8>>), String> {
    let dir = model_dir(key).await?.ok_or_else(|| format!("the model {key} is no longer stored in this browser"))?;
    let missing = |name: &str| format!("{name} of the stored model {key} is missing (the browser's storage was cleared?)");
    let manifest_bytes = opfs::read_in(&dir, "manifest.json").await?.ok_or_else(|| missing("manifest.json"))?;
    let manifest = model_wasm::Manifest::from_json(&String::from_utf8_lossy(&manifest_bytes)).map_err(|e| e.to_string())?;
    let tokenizer = opfs::read_in(&dir, &manifest.tokenizer).await?.ok_or_else(|| missing(&manifest.tokenizer))?;
    let mut shards = std::collections::HashMap::new();
    for s in &manifest.shards {
        shards.insert(s.file.clone(), opfs::read_in(&dir, &s.file).await?.ok_or_else(|| missing(&s.file))?);
    }
    Ok((manifest_bytes, tokenizer, shards))
}

/// Deletes a stored model's folder.
pub async fn remove(key: &str) -> Result<(), String> {
    opfs::remove_in(&root().await?, key).await
}

/// Rewrites a stored model's `local.json` with new templates.
pub async fn set_templates(key: &str, templates: Vec<String>) -> Result<LocalModel, String> {
    let dir = model_dir(key).await?.ok_or_else(|| format!("no stored model {key}"))?;
    let mut model = get(key).await?.ok_or_else(|| format!("no stored model {key}"))?;
    model.templates = templates;
    opfs::write_in(&dir, LOCAL_JSON, &serde_json::to_vec_pretty(&model).map_err(|e| e.to_string())?).await?;
    Ok(model)
}
