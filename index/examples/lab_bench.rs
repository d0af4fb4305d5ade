//! Teaching-lab benchmark: the embedding map (PCA preview, exact kNN, UMAP epochs) and the
//! trustworthiness of the layout on a subsample, for n points of `index::synthetic`'s mixture
//! (512-d, like CLIP ViT-B embeddings). The same program runs natively and in wasm
//! (wasm32-wasip1 under Node's WASI, V8 like Chromium): `bash index/lab_bench.sh 10000`.
//! Single-threaded everywhere, as the worker is.

use std::time::Instant;

use index::lab::map;
use index::synthetic::Distribution;

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("sizes are numbers of points")).collect();
    let sizes = if sizes.is_empty() { vec![10_000] } else { sizes };
    let dim = 512;
    println!("| points | PCA (ms) | kNN (s) | UMAP epochs (s) | UMAP total (s) | trustworthiness k=10 (2,000-point subsample) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let flat = Distribution::Mixture.sample(dim, n, 7, 0);
        let rows: Vec<Vec<f32>> = flat.chunks(dim).map(index::lab::normalized).collect();
        let t = Instant::now();
        let _ = map::pca(&rows, 2, 0);
        let pca_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut knn_done = None;
        let layout = map::umap(&rows, &map::UmapOptions::default(), &mut |done, _| {
            if done >= n && knn_done.is_none() {
                knn_done = Some(t.elapsed().as_secs_f64());
            }
        });
        let total = t.elapsed().as_secs_f64();
        let knn = knn_done.unwrap_or(total);
        let m = n.min(2000);
        let step = n / m;
        let sub: Vec<Vec<f32>> = (0..m).map(|i| rows[i * step].clone()).collect();
        let sub_layout: Vec<[f32; 2]> = (0..m).map(|i| layout[i * step]).collect();
        let trust = map::trustworthiness(&sub, &sub_layout, 10);
        println!("| {n} | {pca_ms:.0} | {knn:.1} | {:.1} | {total:.1} | {trust:.3} |", total - knn);
    }
}
