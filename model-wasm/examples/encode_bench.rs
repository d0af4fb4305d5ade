//! Encode-time benchmark: image and text encoders at batch 1, 8 and 32 on one backend.
//!
//!     cargo run --release -p model-wasm --example encode_bench -- <model dir> <cpu|wgpu|wgpu-f32> [repeats] [batches] [towers]
//!
//! `wgpu` computes in f16 where the adapter has `shader-f16`; `wgpu-f32` always in f32.
//!
//! Prints the load time, then one JSON line per (tower, batch): median and min ms per item over
//! `repeats` runs after one warm-up (`batches`: comma-separated, default 1,8,32;
//! `towers`: comma-separated from `image`, `text` (the longest text the context allows) and
//! `prompt` (a one-line query, which the text tower computes only up to its end), default
//! `image,text`; one tower alone is easier to profile).
//! `bench/bench_clip.py` and `bench/bench_quant.py` run it beside PyTorch on the same weights.

use std::time::Instant;

use model_wasm::{BackendChoice, BackendKind, Clip, Pixels};

/// The `prompt` tower's text; `bench/bench_clip.py` gives PyTorch the same one.
const PROMPT: &str = "an H&E image of poorly differentiated adenocarcinoma.";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, backend) = (args.get(1).expect("model dir"), args.get(2).map_or("cpu", String::as_str));
    let repeats: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(3);
    let batches: Vec<usize> = args
        .get(4)
        .map_or("1,8,32", String::as_str)
        .split(',')
        .map(|b| b.parse().expect("batch sizes"))
        .collect();
    let towers: Vec<&str> = args.get(5).map_or("image,text", String::as_str).split(',').collect();
    if let Some(bad) = towers.iter().find(|t| !["image", "text", "prompt"].contains(t)) {
        panic!("unknown tower {bad:?}: image, text or prompt");
    }
    let choice = match backend {
        "wgpu" => BackendChoice::Wgpu,
        "wgpu-f32" => BackendChoice::WgpuF32,
        "cpu" => BackendChoice::Cpu,
        other => panic!("unknown backend {other:?}: cpu, wgpu or wgpu-f32"),
    };
    let start = Instant::now();
    let clip = pollster::block_on(Clip::load_dir(dir.as_ref(), choice)).expect("load");
    // On lavapipe (and other CPU adapters) device buffers live in the process, so the resident
    // size after load shows what the weights take on the "GPU".
    println!("{{\"load_ms\": {:.0}, \"rss_mb\": {:.0}}}", start.elapsed().as_secs_f64() * 1000.0, rss_mb());
    let info = clip.backend();
    let name = match info.kind {
        BackendKind::Wgpu => format!("obscura-{}-{}", info.kind.name(), info.precision.name()),
        BackendKind::Cpu => format!("obscura-{}", info.kind.name()),
    };
    let s = clip.config.vision.image_size as u32;
    let pixel = |i: usize| Pixels {
        height: s,
        width: s,
        data: (0..3 * s as usize * s as usize).map(|j| (((i * 7919 + j) % 255) as f32 / 127.0) - 1.0).collect(),
    };
    // The longest text the context allows: the worst case for the text tower.
    let text = "an H&E image of ".repeat(30);
    for batch in batches {
        let pixels: Vec<Pixels> = (0..batch).map(pixel).collect();
        let ids = clip.tokenizer.encode_batch(&vec![text.as_str(); batch]).unwrap();
        let prompt_ids = clip.tokenizer.encode_batch(&vec![PROMPT; batch]).unwrap();
        for &tower in &towers {
            let ids = if tower == "prompt" { &prompt_ids } else { &ids };
            let run = || {
                let t = Instant::now();
                if tower == "image" {
                    pollster::block_on(clip.image_features(&pixels)).unwrap();
                } else {
                    pollster::block_on(clip.text_features(ids)).unwrap();
                }
                t.elapsed().as_secs_f64() * 1000.0 / batch as f64
            };
            run();
            let mut times: Vec<f64> = (0..repeats).map(|_| run()).collect();
            times.sort_by(f64::total_cmp);
            println!(
                "{{\"impl\": \"{name}\", \"tower\": \"{tower}\", \"batch\": {batch}, \"median_ms\": {:.2}, \"min_ms\": {:.2}}}",
                times[times.len() / 2],
                times[0]
            );
        }
    }
}

/// Resident set size of this process in MB (Linux), NaN elsewhere.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
