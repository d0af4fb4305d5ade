//! Index benchmark: build and merge time, memory and serialised bytes per vector, search latency
//! (p50/p99) and recall@10 for several `ef`, side by side with brute force, on clustered
//! synthetic 512-d vectors. The same program runs natively and in wasm (wasm32-wasip1 under
//! Node's WASI, V8 like Chromium), so the two can be compared in one run:
//!
//! ```text
//! cargo run --release -p index --example bench -- 10000 100000
//! bash index/bench-wasm.sh 10000 100000
//! ```
//!
//! Prints a Markdown table per size. Single-threaded in wasm; natively instant-distance builds on
//! all cores unless `RAYON_NUM_THREADS=1`.

use std::time::{Duration, Instant};

use index::synthetic::Clusters;
use index::{Config, Index};

const DIM: usize = 512;
const CLUSTERS: usize = 100;
const QUERIES: usize = 300;
const K: usize = 10;
const EFS: [usize; 5] = [16, 32, 64, 128, 256];
const ADDED: usize = 10_000;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers of vectors"))
        .collect();
    let sizes = if sizes.is_empty() { vec![10_000] } else { sizes };
    let target = if cfg!(target_family = "wasm") { "wasm32 (simd128)" } else { "native" };
    let clusters = Clusters::new(DIM, CLUSTERS, 1);
    for n in sizes {
        println!("\n### {n} vectors, {DIM}-d, {CLUSTERS} clusters, {target}\n");
        run(&clusters, n);
    }
}

fn run(clusters: &Clusters, n: usize) {
    let data = clusters.sample(n + ADDED, 2);
    let queries = clusters.sample(QUERIES, 3);
    let rows = |data: &[f32]| data.chunks_exact(DIM).map(<[f32]>::to_vec).collect::<Vec<_>>();
    let (base, added) = data.split_at(n * DIM);
    if let Ok(dir) = std::env::var("BENCH_EXPORT") {
        // The same vectors for the peers' benchmark (index/bench_peers.py).
        let write = |name: &str, data: &[f32]| {
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(format!("{dir}/{n}-{name}.f32"), bytes).expect("write BENCH_EXPORT");
        };
        write("base", base);
        write("added", added);
        write("queries", &queries);
    }
    let (base, added, queries) = (rows(base), rows(added), rows(&queries));

    // Brute force: an index that never leaves its exact segment.
    let exact_config = Config { exact_limit: usize::MAX, ..Config::default() };
    let mut exact = Index::with_config(DIM, exact_config).unwrap();
    for (id, v) in base.iter().enumerate() {
        exact.insert(id as u64, v).unwrap();
    }
    let mut truth = Vec::new();
    let brute = time_queries(&queries, |q| truth.push(exact.search(q, K).unwrap()));

    let mut index = Index::with_config(DIM, config()).unwrap();
    let start = Instant::now();
    for (id, v) in base.iter().enumerate() {
        index.insert(id as u64, v).unwrap();
    }
    let mut calls = 0;
    let mut longest = Duration::ZERO;
    loop {
        let call = Instant::now();
        let step = index.compact();
        longest = longest.max(call.elapsed());
        calls += 1;
        if !step.pending {
            break;
        }
    }
    let build = start.elapsed();
    let stats = index.stats();

    let save = Instant::now();
    let bytes = index.to_bytes();
    let save = save.elapsed();
    let load = Instant::now();
    let loaded = Index::from_bytes(&bytes).unwrap();
    let load = load.elapsed();
    assert_eq!(loaded.len(), index.len());
    drop(loaded);

    println!("| | build + merge | bytes/vector in memory | serialised | save / load |");
    println!("|---|---|---|---|---|");
    println!(
        "| index (defaults) | {:.1} s in {calls} `compact` calls (longest {:.2} s); segments {:?} + {} fresh | {} | {} | {:.0} / {:.0} ms |",
        build.as_secs_f64(),
        longest.as_secs_f64(),
        stats.graph_segments.iter().map(|s| s.0).collect::<Vec<_>>(),
        stats.fresh,
        stats.heap_bytes / n,
        bytes.len() / n,
        save.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
    );
    let exact_stats = exact.stats();
    println!(
        "| brute force | — | {} | {} | |",
        exact_stats.heap_bytes / n,
        exact.to_bytes().len() / n
    );

    println!("\n| search (k = {K}) | p50 µs | p99 µs | recall@{K} |");
    println!("|---|---|---|---|");
    println!("| brute force | {:.0} | {:.0} | 1.0000 |", brute.0, brute.1);
    for ef in EFS {
        let mut results = Vec::new();
        let (p50, p99) = time_queries(&queries, |q| results.push(index.search_ef(q, K, ef).unwrap()));
        println!("| ef = {ef} | {p50:.0} | {p99:.0} | {:.4} |", recall(&truth, &results));
    }

    // Incremental cost: add ADDED vectors in batches of 1,000, compacting after each batch as a
    // worker would, and charge all of it (inserts and every merge it triggers) to the batches.
    let start = Instant::now();
    let mut built = 0;
    for (batch, vectors) in added.chunks(1000).enumerate() {
        for (i, v) in vectors.iter().enumerate() {
            index.insert((n + batch * 1000 + i) as u64, v).unwrap();
        }
        loop {
            let step = index.compact();
            built += step.built;
            if !step.pending {
                break;
            }
        }
    }
    let per_batch = start.elapsed().as_secs_f64() / (ADDED / 1000) as f64;
    println!(
        "\nAdding {ADDED} vectors to {n} in batches of 1,000 (compacting after each): {per_batch:.2} s per 1,000 amortised, {:.1} graph rows built per vector added; segments after: {:?} + {} fresh",
        built as f64 / ADDED as f64,
        index.stats().graph_segments.iter().map(|s| s.0).collect::<Vec<_>>(),
        index.stats().fresh,
    );
}

/// The default configuration, with `BENCH_EFC`, `BENCH_HEURISTIC` (0/1) and `BENCH_MAX_SEGMENT`
/// overriding its build parameters when set (for exploring them).
fn config() -> Config {
    let var = |name: &str| std::env::var(name).ok().map(|v| v.parse::<usize>().expect(name));
    let mut config = Config::default();
    if let Some(efc) = var("BENCH_EFC") {
        config.ef_construction = efc;
    }
    if let Some(h) = var("BENCH_HEURISTIC") {
        config.neighbor_heuristic = h == 1;
    }
    if let Some(max) = var("BENCH_MAX_SEGMENT") {
        config.max_segment_len = max;
    }
    println!("config: {config:?}");
    config
}

/// Runs `search` once per query (after one warm-up pass over a few) and returns p50 and p99 in µs.
fn time_queries(queries: &[Vec<f32>], mut search: impl FnMut(&[f32])) -> (f64, f64) {
    let mut times = Vec::with_capacity(queries.len());
    for q in queries {
        let start = Instant::now();
        search(q);
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

fn recall(truth: &[Vec<index::Hit>], found: &[Vec<index::Hit>]) -> f64 {
    let hits: usize = truth
        .iter()
        .zip(found)
        .map(|(t, f)| f.iter().filter(|h| t.iter().any(|x| x.id == h.id)).count())
        .sum();
    hits as f64 / (truth.len() * K) as f64
}
