//! The model in a real browser: headless Chromium, WebGPU on SwiftShader and the CPU backend,
//! checked against transformers' golden outputs (`tests/golden/`). Run by `scripts/test.sh`
//! through wasm-bindgen-test-runner and chromedriver (flags in `webdriver.json`).
#![cfg(target_arch = "wasm32")]

use model_wasm::{BackendChoice, BackendKind, Clip, ModelFiles, Pixels, Precision};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const MODEL: &str = "tiny-gelu-eos49407";

fn files() -> ModelFiles {
    macro_rules! golden {
        ($f:literal) => {
            include_bytes!(concat!("../../tests/golden/models/tiny-gelu-eos49407/", $f))
        };
    }
    ModelFiles {
        config_json: String::from_utf8_lossy(golden!("config.json")).into_owned(),
        preprocessor_json: Some(String::from_utf8_lossy(golden!("preprocessor_config.json")).into_owned()),
        tokenizer_json: golden!("tokenizer.json").to_vec(),
        tokenizer_config_json: Some(String::from_utf8_lossy(golden!("tokenizer_config.json")).into_owned()),
        weights: golden!("model.safetensors").to_vec(),
        weights_name: "model.safetensors".into(),
    }
}

const GOLDEN: &str = include_str!("../../tests/golden/tiny-gelu-eos49407.json");
const IMAGE: &[u8] = include_bytes!("../../tests/golden/images/rgba-64x48.png");

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// `min_cos` for f32 compute; f16 compute (WebGPU with `shader-f16`) is held to 0.999, as in
/// `tests/tests/golden.rs`.
async fn check(choice: BackendChoice, want: BackendKind, min_cos: f64) {
    let g: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
    let clip = Clip::from_files(files(), choice).await.unwrap();
    assert_eq!(clip.backend().kind, want, "{:?}", clip.backend());
    console_log!("{want:?} computes in {}", clip.backend().precision.name());
    let min_cos = if clip.backend().precision == Precision::F16 { 0.999 } else { min_cos };
    // Decode + preprocess + encode in the browser, from the file's bytes.
    let pixels: Pixels = clip.pixels(IMAGE, "rgba-64x48.png", model_wasm::Exif::Apply).unwrap();
    let emb = clip.embed_images(&[pixels]).await.unwrap();
    let gold = g["images"].as_array().unwrap().iter().find(|e| e["file"] == "rgba-64x48.png").unwrap();
    let gold: Vec<f64> = gold["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let c = cosine(&emb[0], &gold);
    assert!(c >= min_cos, "{MODEL} image on {want:?}: cosine {c}");
    let texts: Vec<&str> = g["texts"].as_array().unwrap().iter().map(|t| t["text"].as_str().unwrap()).collect();
    let (ids, emb) = clip.embed_texts(&texts).await.unwrap();
    for ((t, ours), i) in g["texts"].as_array().unwrap().iter().zip(&emb).zip(&ids) {
        let want_ids: Vec<u32> = t["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(i, &want_ids, "{}", t["text"]);
        let gold: Vec<f64> = t["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let c = cosine(ours, &gold);
        assert!(c >= min_cos, "text {}: cosine {c}", t["text"]);
    }
}

#[wasm_bindgen_test]
async fn webgpu_matches_transformers() {
    // The app's choice: f16 where the adapter has shader-f16.
    check(BackendChoice::Wgpu, BackendKind::Wgpu, 0.9999).await;
}

#[wasm_bindgen_test]
async fn cpu_matches_transformers() {
    check(BackendChoice::Cpu, BackendKind::Cpu, 0.99999).await;
}
