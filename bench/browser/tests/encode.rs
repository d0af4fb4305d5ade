//! Encode time in headless Chromium, full-size ViT-B/32 (random weights), batch 1, 8 and 32:
//! Obscura's model on WebGPU (SwiftShader) and on burn-flex, and candle's CLIP
//! (candle-transformers) on the CPU, all on the same `model.safetensors` and inputs, in one page.
//! Run by `bench/bench_browser.sh`, which serves the checkpoint at `OBSCURA_BENCH_URL` (read at
//! compile time). Prints one JSON line per (implementation, tower, batch).
#![cfg(target_arch = "wasm32")]

use candle_core::{DType, Device, Tensor};
use model_wasm::{BackendChoice, Clip, ModelFiles, Pixels};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

// In a worker, so that minutes of synchronous CPU encoding do not freeze the page that
// ChromeDriver polls (it gives up on a renderer silent for 30 s).
wasm_bindgen_test_configure!(run_in_dedicated_worker);

const BASE: &str = env!("OBSCURA_BENCH_URL");
const BATCHES: [usize; 3] = [1, 8, 32];
/// Set at compile time to leave WebGPU out: on SwiftShader a full-size image takes ~37 s, so
/// its batch-8 and batch-32 runs alone take an hour.
const SKIP_WEBGPU: bool = option_env!("OBSCURA_BENCH_SKIP_WEBGPU").is_some();
/// WebGPU runs batch 1 and 8 only (batch 32 on SwiftShader would take another hour).
const WEBGPU_BATCHES: usize = 2;
/// Set at compile time to run WebGPU at batch 32 alone (~35 min on SwiftShader): one timed run per
/// tower after a batch-1 warm-up, which compiles the kernels. The CPU backend is only loaded, for
/// its load time.
const WEBGPU_BATCH32_ONLY: bool = option_env!("OBSCURA_BENCH_WEBGPU_BATCH32").is_some();
const REPEATS: usize = 2;
const SIZE: usize = 224;
const CONTEXT: usize = 77;

async fn fetch(name: &str) -> Vec<u8> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let response: web_sys::Response =
        JsFuture::from(scope.fetch_with_str(&format!("{BASE}/{name}"))).await.unwrap().dyn_into().unwrap();
    assert!(response.ok(), "{name}: HTTP {}", response.status());
    let buffer = JsFuture::from(response.array_buffer().unwrap()).await.unwrap();
    js_sys::Uint8Array::new(&buffer).to_vec()
}

async fn fetch_text(name: &str) -> String {
    String::from_utf8(fetch(name).await).unwrap()
}

fn now() -> f64 {
    js_sys::global().unchecked_into::<web_sys::WorkerGlobalScope>().performance().unwrap().now()
}

/// Deterministic pixels, as `model-wasm/examples/encode_bench.rs` makes them.
fn pixels(i: usize) -> Vec<f32> {
    (0..3 * SIZE * SIZE).map(|j| (((i * 7919 + j) % 255) as f32 / 127.0) - 1.0).collect()
}

fn report(implementation: &str, tower: &str, batch: usize, mut times: Vec<f64>) {
    times.sort_by(f64::total_cmp);
    console_log!(
        "{{\"impl\": \"{implementation}\", \"tower\": \"{tower}\", \"batch\": {batch}, \"median_ms\": {:.2}, \"min_ms\": {:.2}}}",
        times[times.len() / 2],
        times[0]
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

/// Runs `f` once to warm up, then `REPEATS` times; ms per item.
async fn time<F, Fut>(batch: usize, mut f: F) -> Vec<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    let mut times = Vec::new();
    for _ in 0..REPEATS {
        let t = now();
        f().await;
        times.push((now() - t) / batch as f64);
    }
    times
}

/// Image and text features of the first item at batch 1, for the cross-check between
/// implementations.
type Firsts = (Vec<f32>, Vec<f32>);

async fn load(choice: BackendChoice) -> (Clip, String) {
    let t = now();
    let files = ModelFiles {
        config_json: fetch_text("config.json").await,
        preprocessor_json: Some(fetch_text("preprocessor_config.json").await),
        tokenizer_json: fetch("tokenizer.json").await,
        tokenizer_config_json: Some(fetch_text("tokenizer_config.json").await),
        weights: fetch("model.safetensors").await,
        weights_name: "model.safetensors".into(),
    };
    let fetched = now();
    let clip = Clip::from_files(files, choice).await.unwrap();
    let info = clip.backend();
    let name = match info.kind {
        model_wasm::BackendKind::Wgpu => format!("obscura-{}-{}", info.kind.name(), info.precision.name()),
        model_wasm::BackendKind::Cpu => format!("obscura-{}", info.kind.name()),
    };
    console_log!("{{\"impl\": \"{name}\", \"load_ms\": {:.0}, \"fetch_ms\": {:.0}}}", now() - t, fetched - t);
    (clip, name)
}

/// A one-line query (15 tokens), as `model-wasm/examples/encode_bench.rs`'s `prompt` tower: the
/// text tower computes it only up to its end (16 tokens), candle gets it unpadded (15).
const PROMPT: &str = "an H&E image of poorly differentiated adenocarcinoma.";

fn inputs(clip: &Clip, batch: usize) -> (Vec<Pixels>, Vec<Vec<u32>>) {
    let px = (0..batch).map(|i| Pixels { height: SIZE as u32, width: SIZE as u32, data: pixels(i) }).collect();
    // The longest text the context allows: the worst case for the text tower.
    let long = "an H&E image of ".repeat(30);
    (px, clip.tokenizer.encode_batch(&vec![long.as_str(); batch]).unwrap())
}

fn prompt_ids(tokenizer: &model_wasm::ClipTokenizer, batch: usize) -> Vec<Vec<u32>> {
    tokenizer.encode_batch(&vec![PROMPT; batch]).unwrap()
}

/// WebGPU at batch 32: a batch-1 warm-up, then one timed run per tower. The CPU backend is
/// loaded first (and dropped) for its fetch and load times alone.
async fn webgpu_batch32() {
    drop(load(BackendChoice::Cpu).await);
    let (clip, name) = load(BackendChoice::Wgpu).await;
    let (px, ids) = inputs(&clip, 1);
    clip.image_features(&px).await.unwrap();
    clip.text_features(&ids).await.unwrap();
    let (px, ids) = inputs(&clip, 32);
    let t = now();
    clip.image_features(&px).await.unwrap();
    report(&name, "image", 32, vec![(now() - t) / 32.0]);
    let t = now();
    clip.text_features(&ids).await.unwrap();
    report(&name, "text", 32, vec![(now() - t) / 32.0]);
}

async fn obscura(choice: BackendChoice) -> Firsts {
    let (clip, name) = load(choice).await;
    let mut firsts = (Vec::new(), Vec::new());
    let batches = if clip.backend().kind == model_wasm::BackendKind::Wgpu { &BATCHES[..WEBGPU_BATCHES] } else { &BATCHES[..] };
    for &batch in batches {
        let (px, ids) = inputs(&clip, batch);
        let times = time(batch, || async { clip.image_features(&px).await.unwrap(); }).await;
        report(&name, "image", batch, times);
        let times = time(batch, || async { clip.text_features(&ids).await.unwrap(); }).await;
        report(&name, "text", batch, times);
        // Not on WebGPU: on SwiftShader it would add minutes and show nothing new.
        if clip.backend().kind == model_wasm::BackendKind::Cpu {
            let prompt = prompt_ids(&clip.tokenizer, batch);
            let times = time(batch, || async { clip.text_features(&prompt).await.unwrap(); }).await;
            report(&name, "prompt", batch, times);
        }
        if batch == 1 {
            firsts = (
                clip.image_features(&px).await.unwrap().remove(0),
                clip.text_features(&ids).await.unwrap().remove(0),
            );
        }
    }
    firsts
}

async fn candle() -> Firsts {
    use candle_transformers::models::clip::{ClipConfig, ClipModel};
    let t = now();
    let weights = fetch("model.safetensors").await;
    let vb = candle_nn::VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu).unwrap();
    let model = ClipModel::new(vb, &ClipConfig::vit_base_patch32()).unwrap();
    console_log!("{{\"impl\": \"candle-cpu\", \"load_ms\": {:.0}}}", now() - t);
    // The same ids the Obscura runs tokenize (`tokenizer.json` is the CLIP BPE).
    let tokenizer_json = fetch("tokenizer.json").await;
    let tokenizer = model_wasm::ClipTokenizer::from_bytes(&tokenizer_json, Some("<|endoftext|>"), CONTEXT).unwrap();
    let long = "an H&E image of ".repeat(30);
    let mut firsts = (Vec::new(), Vec::new());
    for batch in BATCHES {
        let data: Vec<f32> = (0..batch).flat_map(pixels).collect();
        let px = Tensor::from_vec(data, (batch, 3, SIZE, SIZE), &Device::Cpu).unwrap();
        let ids: Vec<u32> = tokenizer.encode_batch(&vec![long.as_str(); batch]).unwrap().concat();
        let ids = Tensor::from_vec(ids, (batch, CONTEXT), &Device::Cpu).unwrap();
        let times = time(batch, || async { model.get_image_features(&px).unwrap().to_vec2::<f32>().unwrap(); }).await;
        report("candle-cpu", "image", batch, times);
        let times = time(batch, || async { model.get_text_features(&ids).unwrap().to_vec2::<f32>().unwrap(); }).await;
        report("candle-cpu", "text", batch, times);
        // Cut after the EOS (49407, the largest id, where candle pools): no padding.
        let prompt = prompt_ids(&tokenizer, batch);
        let len = prompt[0].iter().position(|&t| t == 49407).unwrap() + 1;
        let prompt: Vec<u32> = prompt.iter().flat_map(|s| &s[..len]).copied().collect();
        let prompt = Tensor::from_vec(prompt, (batch, len), &Device::Cpu).unwrap();
        let times = time(batch, || async { model.get_text_features(&prompt).unwrap().to_vec2::<f32>().unwrap(); }).await;
        report("candle-cpu", "prompt", batch, times);
        if batch == 1 {
            firsts = (
                model.get_image_features(&px).unwrap().to_vec2::<f32>().unwrap().remove(0),
                model.get_text_features(&ids).unwrap().to_vec2::<f32>().unwrap().remove(0),
            );
        }
    }
    firsts
}

/// One page, one run: the three implementations one after another, then a check that they
/// computed the same thing (cosine of their features on the same inputs).
#[wasm_bindgen_test]
async fn encode_time() {
    if WEBGPU_BATCH32_ONLY {
        return webgpu_batch32().await;
    }
    let wgpu = if SKIP_WEBGPU { None } else { Some(obscura(BackendChoice::Wgpu).await) };
    let cpu = obscura(BackendChoice::Cpu).await;
    let candle = candle().await;
    for (name, other) in [("obscura-wgpu", wgpu.as_ref()), ("candle-cpu", Some(&candle))] {
        let Some(other) = other else { continue };
        let (image, text) = (cosine(&cpu.0, &other.0), cosine(&cpu.1, &other.1));
        console_log!("{{\"check\": \"{name} vs obscura-cpu\", \"image_cos\": {image:.6}, \"text_cos\": {text:.6}}}");
        assert!(image > 0.9999 && text > 0.9999, "{name} computes something else: {image} {text}");
    }
}
