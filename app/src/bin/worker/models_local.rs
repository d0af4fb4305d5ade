//! Models added from this computer: listing and removing them, and importing one (converting a
//! checkpoint or taking a converted model, checking its fidelity, storing it).

use std::cell::Cell;
use std::collections::HashMap;

use app::collection;
use app::models;
use app::opfs;
use app::{Event, FidelityReport, LOCAL_PREFIX, LocalModel};
use model_wasm::convert::{self, ConvertOptions, Converted, Converter, Fidelity, Probe};
use model_wasm::{BackendChoice, Checkpoint, Clip, Layout, ModelCard, converted};
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use web_sys::File;

use crate::model::{cache, small_file};
use crate::state::{STATE, cancelled, post, yield_now};
use crate::store::collection_files;

// ------------------------------------------------------------------ models from this computer

pub(crate) async fn list_models() -> Result<(), String> {
    post(&Event::LocalModels { models: models::list().await? });
    Ok(())
}

pub(crate) async fn remove_model(key: String) -> Result<(), String> {
    if STATE.with(|s| s.borrow().base == format!("{LOCAL_PREFIX}{key}")) {
        // Let go of its collection file before deleting it.
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.store = None;
            s.clip = None;
            s.base.clear();
        });
    }
    models::remove(&key).await?;
    let (collection, index) = collection_files(&key);
    opfs::remove(&collection).await;
    opfs::remove(&index).await;
    list_models().await
}

thread_local! {
    pub(crate) static IMPORT_STARTED: Cell<f64> = const { Cell::new(0.0) };
}

fn import_done(model: LocalModel, duplicate: bool) -> Event {
    let memory = wasm_bindgen::memory().unchecked_into::<js_sys::WebAssembly::Memory>();
    let wasm_memory = memory.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as u64;
    let seconds = (js_sys::Date::now() - IMPORT_STARTED.with(Cell::get)) / 1000.0;
    Event::ImportDone { model, duplicate, seconds, wasm_memory }
}

/// Progress at most every 100 ms, and always at the ends.
struct Throttle(f64);
impl Throttle {
    fn post(&mut self, stage: &str, done: u64, total: u64) {
        let now = js_sys::Date::now();
        if now - self.0 > 100.0 || done == 0 || done >= total {
            self.0 = now;
            post(&Event::ImportProgress { stage: stage.into(), done, total });
        }
    }
}

/// Adds a model from the dropped files: converts a checkpoint (lazily, a tensor at a time) or
/// takes a converted model as it is, checks it, and stores it on this device.
pub(crate) async fn import_model(files: Vec<File>, names: Vec<String>, dtype: String) -> Result<(), String> {
    let dtype = convert::Dtype::parse(&dtype).ok_or_else(|| format!("unknown dtype {dtype:?} (f32, f16, q8 or q4)"))?;
    STATE.with(|s| s.borrow_mut().pending = None);
    let (folder, source) = models::folder(files, &names)?;
    let mut throttle = Throttle(0.0);
    let layout = Layout::detect(&folder).map_err(|e| e.to_string())?;
    if layout == Layout::Converted {
        return import_converted(&folder, &source, &mut throttle).await;
    }
    // OpenCLIP checkpoints rarely ship a tokenizer: theirs is CLIP's BPE, the demo model's.
    let bundled = if layout == Layout::OpenClip && !folder.0.contains_key("tokenizer.json") {
        let cache = cache().await?;
        let bundled = small_file(&cache, "models/demo/tokenizer.json").await.map_err(|e| {
            format!("tokenizer.json is missing: this OpenCLIP checkpoint has none, and the app's CLIP tokenizer (models/demo/tokenizer.json) could not be read ({e}); add a CLIP tokenizer.json to the files")
        })?;
        Some(bundled)
    } else {
        None
    };
    throttle.post("read", 0, 1);
    let checkpoint = Checkpoint::open(&folder, bundled.as_deref()).map_err(|e| e.to_string())?;
    throttle.post("read", 1, 1);
    let license = checkpoint.license().unwrap_or_else(|| "unknown: check the source".into());
    // The manifest holds only what the files say (so its hash, the model's identity, is the
    // same whichever folder name the same checkpoint comes in); the name, the folder and the
    // templates chosen from the name live in local.json.
    let card = ModelCard { name: String::new(), domain: String::new(), license: license.clone(), templates: ModelCard::default().templates };
    let options = ConvertOptions { dtype, shard_bytes: 32_000_000, source: "added from this computer".into(), card };
    let mut converter = Converter::new(&checkpoint, options).map_err(|e| e.to_string())?;
    loop {
        let (done, total) = converter.progress();
        throttle.post("convert", done, total);
        if cancelled() {
            return Err("cancelled: nothing was kept".into());
        }
        if !converter.step().map_err(|e| e.to_string())? {
            break;
        }
        yield_now().await;
    }
    let converted = converter.finish().map_err(|e| e.to_string())?;
    let key = converted.manifest_sha256()[..16].to_string();
    if let Some(existing) = models::get(&key).await? {
        post(&import_done(existing, true));
        return list_models().await;
    }
    // Fidelity: the unconverted model first (then dropped), the converted one after.
    throttle.post("check", 0, 4);
    let original = Clip::from_checkpoint(&checkpoint, BackendChoice::Cpu).await.map_err(|e| e.to_string())?;
    throttle.post("check", 1, 4);
    let before = Probe::of(&original).await.map_err(|e| e.to_string())?;
    drop(original);
    drop(checkpoint);
    if cancelled() {
        return Err("cancelled: nothing was kept".into());
    }
    throttle.post("check", 2, 4);
    let loaded = converted.load(BackendChoice::Cpu).await.map_err(|e| format!("the converted model does not load: {e}"))?;
    throttle.post("check", 3, 4);
    let after = Probe::of(&loaded).await.map_err(|e| e.to_string())?;
    drop(loaded);
    throttle.post("check", 4, 4);
    let fidelity = Fidelity::compare(&before, &after);
    let report = FidelityReport {
        dtype_required: dtype.min_cosine(),
        image_min: fidelity.image_min,
        text_min: fidelity.text_min,
        agreement: fidelity.agreement,
    };
    let passes = fidelity.passes(dtype);
    post(&Event::ImportChecked { fidelity: report, passes });
    let templates = convert::known_templates(&source);
    // A checkpoint without a name of its own gets its key's first digits to tell it apart.
    let name = if source.ends_with("CLIP model") { format!("{source} {}", &key[..6]) } else { source.clone() };
    let model = LocalModel {
        key,
        name,
        source,
        dtype: dtype.name().into(),
        bytes: converted.manifest.total_bytes(),
        license,
        domain: String::new(),
        templates,
        fidelity: Some(report),
    };
    if !passes {
        STATE.with(|s| s.borrow_mut().pending = Some((model, converted)));
        return Ok(());
    }
    store_model(model, &converted, &mut throttle).await
}

pub(crate) async fn keep_import() -> Result<(), String> {
    let Some((model, converted)) = STATE.with(|s| s.borrow_mut().pending.take()) else {
        return Err("there is no converted model waiting".into());
    };
    if let Err(message) = store_model(model, &converted, &mut Throttle(0.0)).await {
        post(&Event::ImportFailed { message });
    }
    Ok(())
}

async fn store_model(model: LocalModel, converted: &Converted, throttle: &mut Throttle) -> Result<(), String> {
    let files = converted.files();
    throttle.post("store", 0, 1);
    models::store(&model, &files, |done, total| throttle.post("store", done, total)).await?;
    post(&import_done(model, false));
    list_models().await
}

/// A converted model (manifest, shards, tokenizer) is checked as the app loads it and stored
/// as it is.
async fn import_converted(folder: &model_wasm::checkpoint::Files, source: &str, throttle: &mut Throttle) -> Result<(), String> {
    let read = |name: &str| -> Result<Vec<u8>, String> {
        let file = folder.0.get(name).ok_or_else(|| format!("{name} is missing: manifest.json lists it as part of the model"))?;
        file.read_all().map_err(|e| e.to_string())
    };
    let manifest_bytes = read("manifest.json")?;
    let manifest_json = String::from_utf8(manifest_bytes.clone()).map_err(|_| "manifest.json is not UTF-8".to_string())?;
    let manifest = model_wasm::Manifest::from_json(&manifest_json).map_err(|e| e.to_string())?;
    let key = collection::hex(&Sha256::digest(&manifest_bytes))[..16].to_string();
    if let Some(existing) = models::get(&key).await? {
        post(&import_done(existing, true));
        return list_models().await;
    }
    let total = manifest.total_bytes();
    let mut shards = HashMap::new();
    let mut done = 0;
    for s in &manifest.shards {
        if cancelled() {
            return Err("cancelled: nothing was kept".into());
        }
        let bytes = read(&s.file)?;
        converted::check_shard(s, &bytes).map_err(|e| e.to_string())?;
        done += bytes.len() as u64;
        shards.insert(s.file.clone(), bytes);
        throttle.post("read", done, total);
        yield_now().await;
    }
    let tokenizer_json = read(&manifest.tokenizer)?;
    throttle.post("check", 0, 1);
    Clip::from_converted_parts(&manifest_json, &shards, &tokenizer_json, BackendChoice::Cpu).await.map_err(|e| e.to_string())?;
    throttle.post("check", 1, 1);
    let name = if manifest.card.name.is_empty() { manifest.source.clone() } else { manifest.card.name.clone() };
    let model = LocalModel {
        key,
        name: if name.is_empty() { source.to_string() } else { name },
        source: manifest.source.clone(),
        dtype: manifest.dtype.clone(),
        bytes: total,
        license: manifest.card.license.clone(),
        domain: manifest.card.domain.clone(),
        templates: manifest.card.templates.clone(),
        fidelity: None,
    };
    let mut files: Vec<(&str, &[u8])> = manifest.shards.iter().map(|s| (s.file.as_str(), shards[&s.file].as_slice())).collect();
    files.push((manifest.tokenizer.as_str(), &tokenizer_json));
    files.push(("manifest.json", &manifest_bytes));
    throttle.post("store", 0, 1);
    models::store(&model, &files, |d, t| throttle.post("store", d, t)).await?;
    post(&import_done(model, false));
    list_models().await
}
