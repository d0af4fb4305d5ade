//! Adding images and whole slides: reading, checking and preprocessing files, embedding them in
//! batches and indexing them.

use std::collections::BTreeMap;
use std::rc::Rc;

use app::collection;
use app::{Event, MAX_FILE_BYTES, Origin};
use js_sys::Uint8Array;
use index::lab::labels::LabelTable;
use model_wasm::slide::{self, Slide, TilingOptions};
use model_wasm::{Clip, Exif, Pixels, PreprocessConfig, preprocess};
use sha2::{Digest, Sha256};
use wasm_bindgen_futures::JsFuture;
use web_sys::File;

use crate::model::embed_images;
use crate::state::{Entry, STATE, clip, js_err, post, yield_now};
use crate::store::{commit, save_index, set_labels};

// ------------------------------------------------------------------ images

/// Images per encoder call: large enough to keep the GPU busy, small enough for steady progress.
const BATCH: usize = 8;

pub(crate) async fn read(file: &File) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(file.array_buffer()).await.map_err(js_err)?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// A file decoded and preprocessed, waiting for the encoder.
struct Prepared {
    name: String,
    pixels: Pixels,
    thumb: Vec<u8>,
}

/// Why a file was not added: the reason, and for a duplicate the content hash it shares with an
/// image already in the collection (a label given with it then goes to that image).
struct Skip {
    reason: String,
    duplicate: Option<[u8; 32]>,
}

impl From<String> for Skip {
    fn from(reason: String) -> Self {
        Skip { reason, duplicate: None }
    }
}

/// A file read and checked (size, not a duplicate), waiting to be decoded.
struct Read {
    name: String,
    bytes: Vec<u8>,
    hash: [u8; 32],
}

/// Reads and checks one file; `Err` is why it is skipped.
async fn read_checked(file: &File, name: &str) -> Result<Read, Skip> {
    let size = file.size() as u64;
    if size == 0 {
        return Err(String::from("empty file (0 bytes)").into());
    }
    if size > MAX_FILE_BYTES {
        return Err(format!("file too large ({}; the limit is {})", app::human_bytes(size), app::human_bytes(MAX_FILE_BYTES)).into());
    }
    let bytes = read(file).await?;
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    if let Some(first) = STATE.with(|s| s.borrow().hashes.get(&hash).cloned()) {
        return Err(Skip { reason: format!("duplicate of {first}"), duplicate: Some(hash) });
    }
    Ok(Read { name: name.to_string(), bytes, hash })
}

/// Decodes, preprocesses and thumbnails one file read: pure CPU work, run on the pool's threads
/// in the threaded build ([`par_map`]); `Err` is why it is skipped.
fn decode(config: &PreprocessConfig, r: &Read) -> Result<(Pixels, Vec<u8>), String> {
    let img = preprocess::decode(&r.bytes, &r.name, Exif::Apply).map_err(|e| {
        // The list already shows the name.
        let e = e.to_string();
        e.strip_prefix(&format!("image {}: ", r.name)).map(str::to_string).unwrap_or(e)
    })?;
    Ok((preprocess::preprocess(&img, config), collection::thumbnail(&img)?))
}

/// `items.map(f)`, on the rayon pool in the threaded build (one item per task), in order on this
/// thread otherwise.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    #[cfg(feature = "threads")]
    {
        use rayon::prelude::*;
        items.par_iter().map(f).collect()
    }
    #[cfg(not(feature = "threads"))]
    items.iter().map(f).collect()
}

/// Where an add's time went, in ms: logged to the console when it finishes (bench/bench_app.mjs
/// reads it).
#[derive(Default)]
struct Stages {
    read: f64,
    decode: f64,
    /// One entry per encoder call (a batch of up to `BATCH`).
    encode: Vec<f64>,
    store: f64,
}

impl Stages {
    fn log(&self, added: usize) {
        let encode: Vec<String> = self.encode.iter().map(|ms| format!("{ms:.0}")).collect();
        let line = format!(
            "obscura: indexed {added} images; ms read {:.0}, decode+preprocess+thumbnail {:.0}, encode {:.0} (batches of {BATCH}: {}), index+store {:.0}",
            self.read,
            self.decode,
            self.encode.iter().sum::<f64>(),
            encode.join(" "),
            self.store
        );
        web_sys::console::info_1(&line.into());
    }
}

fn now() -> f64 {
    js_sys::Date::now()
}

/// Gives an embedded image its id, indexes it and returns its stored form.
pub(crate) fn index_item(name: String, hash: [u8; 32], thumb: Vec<u8>, embedding: Vec<f32>, origin: Option<Origin>) -> collection::Item {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        if let Some(Err(e)) = s.index.as_mut().map(|ix| ix.insert(id, &embedding)) {
            web_sys::console::error_1(&format!("index insert: {e}").into());
        }
        s.hashes.insert(hash, name.clone());
        s.items.insert(id, Entry { hash, name: name.clone(), embedding: embedding.clone(), label: None });
        collection::Item { id, hash, name, thumb, embedding, origin }
    })
}

pub(crate) async fn add(files: Vec<File>, names: Vec<String>) -> Result<(), String> {
    let clip = clip()?;
    if STATE.with(|s| s.borrow().adding.replace(true)) {
        return Err("images are already being added: wait or cancel".into());
    }
    STATE.with(|s| s.borrow().cancel.set(false));
    let started = js_sys::Date::now();
    let names: Vec<String> =
        files.iter().enumerate().map(|(i, f)| names.get(i).cloned().unwrap_or_else(|| f.name())).collect();
    let (files, names, tables) = split_label_tables(files, names).await;
    // Class folders: each image's folder, when the drop's images sit in two or more of them (a
    // CSV in the drop labels it instead, as `weights-tool eval` reads a set).
    let images: Vec<String> = names.iter().filter(|n| index::lab::labels::is_image_path(n)).cloned().collect();
    let folder_labels: BTreeMap<String, String> = if tables.is_empty() {
        images.iter().cloned().zip(index::lab::labels::folder_labels(&images)).filter_map(|(n, l)| Some((n, l?))).collect()
    } else {
        BTreeMap::new()
    };
    // Images added now, and files that duplicate one already here (by id: their labels apply).
    let mut new_ids: Vec<u64> = Vec::new();
    let mut duplicates: Vec<(u64, String)> = Vec::new();
    let (files, names, slides) = split_slides(files, names);
    let total = files.len();
    let (mut added, mut skipped, mut done) = (0, 0, 0);
    let mut cancelled = false;
    let mut batch: Vec<(Prepared, [u8; 32])> = Vec::new();
    let mut stages = Stages::default();
    let mut i = 0;
    while i < total || !batch.is_empty() {
        if STATE.with(|s| s.borrow().cancel.get()) {
            cancelled = true;
            break;
        }
        // Fill a batch (skipping bad files as they come), then embed it. Files are read here
        // (async), then decoded together (on every thread of the threaded build).
        while batch.len() < BATCH && i < total {
            let t = now();
            let mut reads = Vec::new();
            while batch.len() + reads.len() < BATCH && i < total {
                let name = &names[i];
                match read_checked(&files[i], name).await {
                    Ok(r) => {
                        // Claim the hash now so a duplicate within the batch is caught too.
                        STATE.with(|s| s.borrow_mut().hashes.insert(r.hash, name.clone()));
                        reads.push(r);
                    }
                    Err(Skip { reason, duplicate }) => {
                        if let Some(id) = duplicate.and_then(|h| STATE.with(|s| s.borrow().items.iter().find(|(_, e)| e.hash == h).map(|(&id, _)| id))) {
                            duplicates.push((id, name.clone()));
                        }
                        skipped += 1;
                        done += 1;
                        post(&Event::Skipped { name: name.clone(), reason });
                    }
                }
                i += 1;
            }
            let t_decode = now();
            stages.read += t_decode - t;
            let config = &clip.preprocess;
            let decoded = par_map(&reads, |r| decode(config, r));
            stages.decode += now() - t_decode;
            for (r, d) in reads.into_iter().zip(decoded) {
                match d {
                    Ok((pixels, thumb)) => batch.push((Prepared { name: r.name, pixels, thumb }, r.hash)),
                    Err(reason) => {
                        STATE.with(|s| s.borrow_mut().hashes.remove(&r.hash));
                        skipped += 1;
                        done += 1;
                        post(&Event::Skipped { name: r.name, reason });
                    }
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let pixels: Vec<Pixels> = batch.iter().map(|(p, _)| p.pixels.clone()).collect();
        let t = now();
        let embeddings = match embed_images(&pixels).await {
            Ok(e) => e,
            Err(e) => {
                // The encoder failed on the CPU too: report and stop, keeping what is indexed.
                for (p, hash) in batch.drain(..) {
                    STATE.with(|s| s.borrow_mut().hashes.remove(&hash));
                    post(&Event::Skipped { name: p.name, reason: format!("encoder failed: {e}") });
                }
                break;
            }
        };
        let t_store = now();
        stages.encode.push(t_store - t);
        let items: Vec<collection::Item> = batch
            .drain(..)
            .zip(embeddings)
            .map(|((p, hash), embedding)| index_item(p.name, hash, p.thumb, embedding, None))
            .collect();
        added += items.len();
        done += items.len();
        new_ids.extend(items.iter().map(|i| i.id));
        commit(&items);
        stages.store += now() - t_store;
        let secs = (now() - started) / 1000.0;
        post(&Event::Indexing { done, total, per_second: added as f64 / secs.max(1e-3) });
        yield_now().await;
    }
    // The skipped list shows the name already.
    let reason_of = |name: &str, e: String| e.strip_prefix(&format!("slide {name}: ")).map(str::to_string).unwrap_or(e);
    for (name, opened) in slides {
        if cancelled || STATE.with(|s| s.borrow().cancel.get()) {
            cancelled = true;
            break;
        }
        match opened {
            Ok(slide) => match add_slide(&clip, &slide).await {
                Ok((n, stopped)) => {
                    added += n;
                    cancelled |= stopped;
                }
                Err(reason) => {
                    skipped += 1;
                    let reason = reason_of(&name, reason);
                    post(&Event::Skipped { name, reason });
                }
            },
            Err(reason) => {
                skipped += 1;
                let reason = reason_of(&name, reason);
                post(&Event::Skipped { name, reason });
            }
        }
    }
    label_added(&new_ids, &duplicates, &folder_labels, &tables);
    STATE.with(|s| s.borrow().adding.set(false));
    let t = now();
    save_index().await;
    stages.store += now() - t;
    if !stages.encode.is_empty() {
        stages.log(added);
    }
    let seconds = (js_sys::Date::now() - started) / 1000.0;
    post(&Event::Finished { added, skipped, cancelled, seconds });
    Ok(())
}

// ------------------------------------------------------------------ labels

/// Takes the `file,label` CSVs out of a drop and reads them; an unreadable one is skipped and
/// listed like a bad image.
async fn split_label_tables(files: Vec<File>, names: Vec<String>) -> (Vec<File>, Vec<String>, Vec<(String, LabelTable)>) {
    let (mut kept_files, mut kept_names, mut tables) = (Vec::new(), Vec::new(), Vec::new());
    for (file, name) in files.into_iter().zip(names) {
        if !index::lab::labels::is_label_csv(&name) {
            kept_files.push(file);
            kept_names.push(name);
            continue;
        }
        let parsed = read(&file).await.and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8 text".to_string())).and_then(|t| LabelTable::parse(&t));
        match parsed {
            Ok(t) => tables.push((name, t)),
            Err(reason) => post(&Event::Skipped { name, reason: format!("not a file,label table: {reason}") }),
        }
    }
    (kept_files, kept_names, tables)
}

/// Labels what was just added from its class folder (and an image already here that a dropped
/// file duplicates, from that file's folder: dropping the class folders labels images added
/// before), and, from the drop's CSVs, any image of the collection they name: a CSV dropped after
/// the images labels them.
fn label_added(new_ids: &[u64], duplicates: &[(u64, String)], folders: &BTreeMap<String, String>, tables: &[(String, LabelTable)]) {
    let mut changes: Vec<(u64, Option<String>)> = Vec::new();
    STATE.with(|s| {
        let s = s.borrow();
        for id in new_ids {
            if let Some(l) = s.items.get(id).and_then(|e| folders.get(&e.name)) {
                changes.push((*id, Some(l.clone())));
            }
        }
        for (id, name) in duplicates {
            if let Some(l) = folders.get(name) {
                changes.push((*id, Some(l.clone())));
            }
        }
        for (_, table) in tables {
            for (&id, e) in &s.items {
                if let Some(l) = table.label_of(&e.name) {
                    changes.push((id, Some(l.to_string())));
                }
            }
        }
    });
    for (name, table) in tables {
        let used = STATE.with(|s| s.borrow().items.values().filter(|e| table.label_of(&e.name).is_some()).count());
        if used == 0 {
            post(&Event::Skipped { name: name.clone(), reason: format!("none of its {} rows names an image in the collection", table.rows) });
        }
    }
    set_labels(changes);
}

// ------------------------------------------------------------------ slides

/// Extensions that are whole-slide formats (read, or refused by name): never decoded as images.
const SLIDE_EXTENSIONS: [&str; 12] = ["svs", "ndpi", "mrxs", "isyntax", "czi", "vsi", "scn", "bif", "vms", "vmu", "dcm", "qptiff"];

/// A TIFF is a slide when it is tiled and pyramidal, or this large.
const SLIDE_PIXELS: u64 = 64 << 20;

fn extension(name: &str) -> String {
    name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

/// A slide opened (lazily: directories only) or the reason it cannot be.
type Opened = Result<Slide, String>;

/// Separates slides from images. `.dcm` files are grouped by folder into one DICOM series;
/// a TIFF is a slide when it is a tiled pyramid (or very large), else an image.
fn split_slides(files: Vec<File>, names: Vec<String>) -> (Vec<File>, Vec<String>, Vec<(String, Opened)>) {
    let (mut images, mut image_names, mut slides) = (Vec::new(), Vec::new(), Vec::new());
    let mut dicom: BTreeMap<String, Vec<Rc<dyn model_wasm::Source>>> = BTreeMap::new();
    let source = |file: File, name: &str| app::models::WebFile::source(file, name.to_string());
    for (file, name) in files.into_iter().zip(names) {
        let ext = extension(&name);
        if ext == "dcm" {
            // One series per folder; files chosen without a folder form one series together.
            let folder = name.rsplit_once('/').map_or_else(String::new, |(d, _)| d.to_string());
            match source(file, &name) {
                Ok(s) => dicom.entry(folder).or_default().push(s),
                Err(e) => slides.push((name, Err(e))),
            }
        } else if SLIDE_EXTENSIONS.contains(&ext.as_str()) {
            let opened = source(file, &name).and_then(|s| Slide::open(&name, s).map_err(|e| e.to_string()));
            slides.push((name, opened));
        } else if ext == "tif" || ext == "tiff" {
            let opened = match source(file.clone(), &name) {
                Ok(s) => Slide::open(&name, s),
                Err(e) => Err(model_wasm::Error::Input(e)),
            };
            let opened_message = opened.as_ref().err().map(ToString::to_string);
            match opened {
                Ok(sl) if sl.levels.len() > 1 || sl.width() as u64 * sl.height() as u64 > SLIDE_PIXELS => slides.push((name, Ok(sl))),
                // A slide format built on TIFF, refused by name. Anything else (a grey or
                // 16-bit TIFF, a plain stripped one) goes to the image decoder.
                Err(model_wasm::Error::Slide { problem: slide::Problem::Refused { format, .. }, .. })
                    if slide::TIFF_SLIDE_FORMATS.contains(&format) =>
                {
                    slides.push((name.clone(), Err(opened_message.unwrap_or_default())))
                }
                _ => {
                    images.push(file);
                    image_names.push(name);
                }
            }
        } else {
            images.push(file);
            image_names.push(name);
        }
    }
    for (folder, files) in dicom {
        let label = if folder.is_empty() { files[0].name().to_string() } else { folder };
        slides.push((label.clone(), Slide::open_dicom(&label, files).map_err(|e| e.to_string())));
    }
    (images, image_names, slides)
}

/// Tiles a slide over its tissue and embeds every patch, in batches, with progress; patches
/// already in the collection (the same slide dropped again, e.g. after a reload cut an
/// earlier run short) are skipped before they are read, so a second drop resumes.
/// Returns (patches added, cancelled).
async fn add_slide(clip: &Rc<Clip>, slide: &Slide) -> Result<(usize, bool), String> {
    let started = js_sys::Date::now();
    let options = TilingOptions { patch: clip.input_size(), ..TilingOptions::default() };
    let (_, mask, plan) = slide::prepare(slide, &options).map_err(|e| e.to_string())?;
    let total = plan.patches.len();
    post(&Event::SlideOpened {
        name: slide.name.clone(),
        format: slide.format.name().to_string(),
        width: slide.width(),
        height: slide.height(),
        mpp: plan.mpp,
        target_mpp: options.target_mpp,
        level: plan.level,
        patches: total,
        tissue: mask.coverage(),
        associated: slide.associated.iter().map(|a| a.kind.to_string()).collect(),
    });
    let fp = slide.fingerprint().map_err(|e| e.to_string())?;
    let (mut added, mut done) = (0, 0);
    let mut unreadable = 0;
    let mut first_error: Option<String> = None;
    for chunk in plan.patches.chunks(BATCH) {
        if STATE.with(|s| s.borrow().cancel.get()) {
            return Ok((added, true));
        }
        let mut batch = Vec::new();
        for p in chunk {
            let hash = slide::patch_hash(&fp, p);
            if STATE.with(|s| s.borrow().hashes.contains_key(&hash)) {
                continue;
            }
            // A damaged tile loses the patches on it, not the slide.
            let rgb = match plan.read(slide, p) {
                Ok(rgb) => rgb,
                Err(e) => {
                    unreadable += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                    continue;
                }
            };
            let name = format!("{} ({}, {})", slide.name, p.x, p.y);
            let origin = Origin { slide: slide.name.clone(), x: p.x, y: p.y, size: p.size };
            batch.push((name, hash, collection::thumbnail(&rgb)?, clip.pixels_of(&rgb), origin));
        }
        done += chunk.len();
        if !batch.is_empty() {
            let pixels: Vec<Pixels> = batch.iter().map(|b| b.3.clone()).collect();
            let embeddings = embed_images(&pixels).await?;
            let items: Vec<collection::Item> = batch
                .into_iter()
                .zip(embeddings)
                .map(|((name, hash, thumb, _, origin), e)| index_item(name, hash, thumb, e, Some(origin)))
                .collect();
            added += items.len();
            commit(&items);
        }
        let secs = (js_sys::Date::now() - started) / 1000.0;
        post(&Event::Indexing { done, total, per_second: done as f64 / secs.max(1e-3) });
        yield_now().await;
    }
    if let Some(e) = first_error {
        let e = e.strip_prefix(&format!("slide {}: ", slide.name)).map(str::to_string).unwrap_or(e);
        post(&Event::Skipped {
            name: slide.name.clone(),
            reason: format!("{unreadable} of {total} patches could not be read, the others were added ({e})"),
        });
    }
    Ok((added, false))
}
