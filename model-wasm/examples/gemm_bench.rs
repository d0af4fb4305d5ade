//! The CPU backend's matrix multiply on the shapes of ViT-B/32, in GFLOP/s.
//!
//!     cargo run --release -p model-wasm --example gemm_bench -- [repeats] [batch]
//!
//! One JSON line per shape: `{"impl", "shape", "m", "k", "n", "batch", "gflops"}` (best of
//! `repeats` after a warm-up; `batch` images or texts, default 8). `bench/bench_clip.py --gemm`
//! runs it beside `torch.matmul` on the same shapes: matmuls are most of the CPU backend's encode
//! time (perf), so this is the first thing that sets its speed against PyTorch's.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor, backend::Backend};
use model_wasm::runtime::Cpu;

/// (name, batch, m, k, n) at `batch` images (50 tokens each, width 768, 12 heads) or texts (77
/// tokens, width 512, 8 heads).
fn shapes(batch: usize) -> [(String, usize, usize, usize, usize); 7] {
    let (image, text) = (batch * 50, batch * 77);
    [
        (format!("image q/k/v/out {image}x768x768"), 1, image, 768, 768),
        (format!("image fc1 {image}x768x3072"), 1, image, 768, 3072),
        (format!("image fc2 {image}x3072x768"), 1, image, 3072, 768),
        (format!("text q/k/v/out {text}x512x512"), 1, text, 512, 512),
        (format!("text fc1 {text}x512x2048"), 1, text, 512, 2048),
        (format!("image q.k^T {}x(50x64x50)", batch * 12), batch * 12, 50, 64, 50),
        (format!("text q.k^T {}x(77x64x77)", batch * 8), batch * 8, 77, 64, 77),
    ]
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|r| r.parse().ok()).unwrap_or(default);
    let (repeats, batch_size) = (arg(1, 20), arg(2, 8));
    let device = Default::default();
    for (name, batch, m, k, n) in shapes(batch_size) {
        let a = Tensor::<Cpu, 3>::random([batch, m, k], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<Cpu, 3>::random([batch, k, n], Distribution::Normal(0.0, 1.0), &device);
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
            "{{\"impl\": \"burn-{}\", \"shape\": \"{name}\", \"m\": {m}, \"k\": {k}, \"n\": {n}, \"batch\": {batch}, \"gflops\": {gflops:.1}}}",
            Cpu::name(&device)
        );
    }
}
