//! The bundled demo model (`demo/checkpoint`, trained by `demo/train.py`) and its converted form
//! (`public/models/demo`, what the app downloads) on the demo collection (`public/samples`).
//!
//! - The Rust model reproduces transformers' embeddings, decoding the same files from disk: the
//!   nine class prompts (tokens identical) and 18 demo tiles saved losslessly (PNG) to cosine
//!   ≥ 0.99999; the 200 JPEG demo tiles to cosine ≥ 0.9999, because JPEG decoders differ (zune-jpeg
//!   here, libjpeg-turbo in Pillow: IDCT rounding, ±1 level on some pixels; measured 1 - cos ≤ 2.2e-5
//!   with 4:4:4 JPEGs, 6.5e-4 with 4:2:0 ones, whose chroma upsampling differs too).
//! - The converted q8 model stays within q8's bound of them: cosine ≥ 0.995.
//! - Retrieval works: for each class, the prompt "an H&E image of {class}." puts mostly tiles of
//!   that class in its top 10 (precision@10 ≥ 0.8 for every class), and zero-shot classification
//!   of the collection is far above chance (≥ 0.85; chance is 0.11).

use std::path::{Path, PathBuf};

use model_wasm::{BackendChoice, Clip, Exif, dot};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    template: String,
    images: Vec<RefImage>,
    lossless: Vec<RefImage>,
    texts: Vec<RefText>,
}

#[derive(Deserialize)]
struct RefImage {
    file: String,
    class: String,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct RefText {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    file: String,
    class: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(root().join("tests/golden/demo.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Decodes and preprocesses the reference's files from `dir`, as a user's files would be.
fn decode_all(clip: &Clip, dir: &Path, images: &[RefImage]) -> Vec<model_wasm::Pixels> {
    images.iter().map(|i| clip.pixels(&std::fs::read(dir.join(&i.file)).unwrap(), &i.file, Exif::Apply).unwrap()).collect()
}

/// Embeds every demo tile (decoded from its file) and the reference prompts.
/// Token ids, text embeddings, image embeddings.
type Embedded = (Vec<Vec<u32>>, Vec<Vec<f32>>, Vec<Vec<f32>>);

fn embed_collection(clip: &Clip, r: &Reference) -> Embedded {
    let pixels = decode_all(clip, &root().join("public/samples"), &r.images);
    let mut images = Vec::new();
    for chunk in pixels.chunks(32) {
        images.extend(pollster::block_on(clip.embed_images(chunk)).unwrap());
    }
    let prompts: Vec<&str> = r.texts.iter().map(|t| t.text.as_str()).collect();
    let (ids, texts) = pollster::block_on(clip.embed_texts(&prompts)).unwrap();
    (ids, images, texts)
}

fn worst_cosine(ours: &[Vec<f32>], theirs: impl Iterator<Item = Vec<f32>>) -> f64 {
    ours.iter().zip(theirs).map(|(a, b)| cosine(a, &b)).fold(1.0, f64::min)
}

#[test]
fn manifest_lists_every_sample_with_a_kather_class() {
    let classes = [
        "adipose tissue",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ];
    let dir = root().join("public/samples");
    let manifest: Vec<ManifestEntry> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.len() >= 180, "about 200 demo tiles, found {}", manifest.len());
    for entry in &manifest {
        assert!(classes.contains(&entry.class.as_str()), "{}: unknown class {:?}", entry.file, entry.class);
        assert!(dir.join(&entry.file).is_file(), "{} is listed but missing", entry.file);
        assert!(!classes.iter().any(|c| entry.file.contains(c.split(' ').next().unwrap())), "{} names its class", entry.file);
    }
    for class in classes {
        let n = manifest.iter().filter(|e| e.class == class).count();
        assert!(n >= 15, "{class}: only {n} tiles");
    }
    let on_disk = std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "jpg")).count();
    assert_eq!(on_disk, manifest.len(), "every tile is in the manifest");
}

#[test]
fn rust_model_reproduces_transformers_on_the_demo_collection() {
    let r = reference();
    let clip = pollster::block_on(Clip::load_dir(&root().join("demo/checkpoint"), BackendChoice::Cpu)).unwrap();
    let (ids, images, texts) = embed_collection(&clip, &r);
    for (ours, theirs) in ids.iter().zip(&r.texts) {
        assert_eq!(ours, &theirs.input_ids, "tokens of {:?}", theirs.text);
    }
    let jpeg = worst_cosine(&images, r.images.iter().map(|i| i.embedding.clone()));
    let txt = worst_cosine(&texts, r.texts.iter().map(|t| t.embedding.clone()));
    let pixels = decode_all(&clip, &root().join("tests/golden/demo-png"), &r.lossless);
    let lossless = pollster::block_on(clip.embed_images(&pixels)).unwrap();
    let png = worst_cosine(&lossless, r.lossless.iter().map(|i| i.embedding.clone()));
    eprintln!(
        "demo checkpoint vs transformers, 1 - worst cosine: PNG tiles {:.1e}, JPEG tiles {:.1e}, texts {:.1e}",
        1.0 - png,
        1.0 - jpeg,
        1.0 - txt
    );
    assert_eq!(r.lossless.len(), 18);
    assert!(png >= 0.99999, "worst lossless image cosine {png}");
    assert!(txt >= 0.99999, "worst text cosine {txt}");
    assert!(jpeg >= 0.9999, "worst JPEG image cosine {jpeg}");
}

#[test]
fn converted_demo_model_retrieves_each_class() {
    let r = reference();
    let clip = pollster::block_on(Clip::load_dir(&root().join("public/models/demo"), BackendChoice::Cpu)).unwrap();
    let (_, images, texts) = embed_collection(&clip, &r);
    let img = worst_cosine(&images, r.images.iter().map(|i| i.embedding.clone()));
    let txt = worst_cosine(&texts, r.texts.iter().map(|t| t.embedding.clone()));
    eprintln!("converted demo model vs transformers (f32): worst cosine images {img:.5}, texts {txt:.5}");
    assert!(img >= 0.995 && txt >= 0.995, "q8 within its bound: images {img}, texts {txt}");

    let classes: Vec<&str> = r.texts.iter().map(|t| t.text.strip_prefix("an H&E image of ").unwrap().trim_end_matches('.')).collect();
    assert_eq!(r.template, "an H&E image of {}.");
    let mut correct = 0;
    for (i, image) in images.iter().enumerate() {
        let best = (0..texts.len()).max_by(|&a, &b| dot(image, &texts[a]).total_cmp(&dot(image, &texts[b]))).unwrap();
        correct += usize::from(classes[best] == r.images[i].class);
    }
    let accuracy = correct as f64 / images.len() as f64;
    eprintln!("zero-shot accuracy on the demo collection: {accuracy:.3}");
    assert!(accuracy >= 0.85, "zero-shot accuracy {accuracy}");

    for (c, class) in classes.iter().enumerate() {
        let mut order: Vec<usize> = (0..images.len()).collect();
        order.sort_by(|&a, &b| dot(&images[b], &texts[c]).total_cmp(&dot(&images[a], &texts[c])));
        let hits = order[..10].iter().filter(|&&i| r.images[i].class == *class).count();
        eprintln!("{class}: precision@10 {:.1}", hits as f64 / 10.0);
        assert!(hits >= 8, "{class}: precision@10 is {hits}/10");
    }
}
