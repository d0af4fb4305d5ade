//! The CPU backend's matrix multiply on the shapes of ViT-B/32 at batch 8, in GFLOP/s.
//!
//!     cargo run --release -p model-wasm --example gemm_bench -- [repeats]
//!
//! One JSON line per shape: `{"impl", "shape", "m", "k", "n", "batch", "gflops"}` (best of
//! `repeats` after a warm-up). `bench/bench_clip.py --gemm` runs it beside `torch.matmul` on the
//! same shapes: matmuls are ~2/3 of the CPU backend's encode time (perf), so this is the first
//! thing that sets its speed against PyTorch's.

use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};

/// (name, batch, m, k, n): the image tower at batch 8 has 8 * 50 tokens, the text tower 8 * 77.
pub const SHAPES: [(&str, usize, usize, usize, usize); 6] = [
    ("image q/k/v/out 400x768x768", 1, 400, 768, 768),
    ("image fc1 400x768x3072", 1, 400, 768, 3072),
    ("image fc2 400x3072x768", 1, 400, 3072, 768),
    ("text fc1 616x512x2048", 1, 616, 512, 2048),
    ("image q.k^T 96x(50x64x50)", 96, 50, 64, 50),
    ("text q.k^T 64x(77x64x77)", 64, 77, 64, 77),
];

fn main() {
    let repeats: usize = std::env::args().nth(1).and_then(|r| r.parse().ok()).unwrap_or(20);
    let device = Default::default();
    for (name, batch, m, k, n) in SHAPES {
        let a = Tensor::<NdArray<f32>, 3>::random([batch, m, k], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<NdArray<f32>, 3>::random([batch, k, n], Distribution::Normal(0.0, 1.0), &device);
        let run = || {
            let t = Instant::now();
            let c = a.clone().matmul(b.clone());
            let _ = c.into_data();
            t.elapsed().as_secs_f64()
        };
        run();
        let best = (0..repeats).map(|_| run()).fold(f64::INFINITY, f64::min);
        let gflops = 2.0 * (batch * m * k * n) as f64 / best / 1e9;
        println!(
            "{{\"impl\": \"burn-ndarray\", \"shape\": \"{name}\", \"m\": {m}, \"k\": {k}, \"n\": {n}, \"batch\": {batch}, \"gflops\": {gflops:.1}}}"
        );
    }
}
