//! Index benchmark: build time (and the longest `compact` call), memory and serialised bytes per
//! vector, save/load, search latency (p50/p99) and recall@10 for several `ef` against exact f32
//! brute force, with 10% of the ids removed, and the cost of adding 10 × 1,000 vectors, on every
//! distribution of `index::synthetic` (512-d) and on real embeddings (the demo collection
//! through the demo model, 64-d, with noise). The same program runs natively and in wasm
//! (wasm32-wasip1 under Node's WASI, V8 like Chromium), so the two compare in one run:
//!
//! ```text
//! cargo run --release -p index --example bench -- 10000 100000
//! BENCH_DISTS=mixture,sphere bash index/bench.sh 100000
//! ```
//!
//! Prints a Markdown table per distribution and size. Single-threaded everywhere.

use std::time::{Duration, Instant};

use index::synthetic::{Distribution, around};
use index::{Config, Hit, Index};

const QUERIES: usize = 300;
const K: usize = 10;
const EFS: [usize; 5] = [16, 32, 64, 128, 256];
const ADDED: usize = 10_000;
/// Every tenth id is removed before searching.
const REMOVED_EVERY: usize = 10;
/// The demo collection's 200 embeddings through the demo model (64-d, little-endian f32), as
/// `tests/real.rs` uses them; in wasm the file is passed in by the runner's preopened directory.
const REAL: &str = "index/tests/data/demo-embeddings.f32";

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are numbers of vectors"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000]
    } else {
        sizes
    };
    let dists =
        std::env::var("BENCH_DISTS").unwrap_or_else(|_| "mixture,uneven,sphere,real".into());
    let target = if cfg!(target_family = "wasm") {
        "wasm32 (simd128)"
    } else {
        "native"
    };
    println!("config: {:?}", config());
    for n in sizes {
        for name in dists.split(',') {
            let (dim, data, queries) = match name {
                "real" => {
                    let bytes = std::fs::read(REAL).expect("read the demo embeddings");
                    let base: Vec<f32> = bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    (
                        64,
                        around(&base, 64, n + ADDED, (0.2, 0.6), 2),
                        around(&base, 64, QUERIES, (0.2, 0.6), 3),
                    )
                }
                _ => {
                    let d = Distribution::parse(name)
                        .expect("BENCH_DISTS: mixture, uneven, sphere, real");
                    (
                        512,
                        d.sample(512, n + ADDED, 1, 2),
                        d.sample(512, QUERIES, 1, 3),
                    )
                }
            };
            println!("\n### {n} vectors, {name}, {dim}-d, {target}\n");
            run(name, dim, n, &data, &queries);
        }
    }
}

fn run(name: &str, dim: usize, n: usize, data: &[f32], queries: &[f32]) {
    let (base, added) = data.split_at(n * dim);
    if let Ok(dir) = std::env::var("BENCH_EXPORT") {
        // The same vectors for the peers' benchmark (index/bench_peers.py).
        let write = |part: &str, data: &[f32]| {
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(format!("{dir}/{name}-{n}-{part}.f32"), bytes)
                .expect("write BENCH_EXPORT");
        };
        write("base", base);
        write("added", added);
        write("queries", queries);
    }
    let rows = |data: &'_ [f32]| {
        data.chunks_exact(dim)
            .map(|v| v.to_vec())
            .collect::<Vec<_>>()
    };
    let queries = rows(queries);
    let removed = |id: usize| id % REMOVED_EVERY == REMOVED_EVERY - 1;

    // Exact f32 brute force over the live rows, normalised once (no copy in an index: at a
    // million rows, wasm32's 4 GB would not hold the data twice).
    let norms: Vec<f32> = base
        .chunks_exact(dim)
        .map(|v| v.iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    let mut truth = Vec::new();
    let brute = time_queries(&queries, |q| {
        let qn = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(K + 1);
        for (id, v) in base
            .chunks_exact(dim)
            .enumerate()
            .filter(|(id, _)| !removed(*id))
        {
            let score = v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>() / (norms[id] * qn);
            if best.len() < K || score > best[K - 1].0 {
                best.push((score, id));
                best.sort_by(|a, b| b.0.total_cmp(&a.0));
                best.truncate(K);
            }
        }
        truth.push(
            best.into_iter()
                .map(|(score, id)| Hit {
                    id: id as u64,
                    score,
                })
                .collect::<Vec<_>>(),
        );
    });

    let mut index = Index::with_config(dim, config()).unwrap();
    let start = Instant::now();
    for (id, v) in base.chunks_exact(dim).enumerate() {
        index.insert(id as u64, v).unwrap();
    }
    let (calls, longest) = compact_timed(&mut index);
    let build = start.elapsed();
    for id in (0..n).filter(|&id| removed(id)) {
        index.remove(id as u64);
    }
    let stats = index.stats();

    let save = Instant::now();
    let bytes = index.to_bytes();
    let save = save.elapsed();
    let load = Instant::now();
    let loaded = Index::from_bytes(&bytes).unwrap();
    let load = load.elapsed();
    assert!(loaded == index, "load gives back the index");
    drop(loaded);

    println!(
        "| | build | longest `compact` call | bytes/vector in memory | serialised | save / load |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| index (defaults) | {:.1} s ({:.0} vectors/s) | {:.1} ms of {calls} | {} | {} | {:.0} / {:.0} ms |",
        build.as_secs_f64(),
        n as f64 / build.as_secs_f64(),
        longest.as_secs_f64() * 1e3,
        stats.heap_bytes / n,
        bytes.len() / n,
        save.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
    );
    println!(
        "| brute force (f32 rows and u64 ids) | — | — | {} | {} | |",
        4 * dim + 8,
        4 * dim + 8
    );

    println!("\n| search (k = {K}, 10% removed) | p50 µs | p99 µs | recall@{K} |");
    println!("|---|---|---|---|");
    println!("| brute force | {:.0} | {:.0} | 1.0000 |", brute.0, brute.1);
    let efs: Vec<usize> = match std::env::var("BENCH_EFS") {
        Ok(list) => list
            .split(',')
            .map(|e| e.parse().expect("BENCH_EFS"))
            .collect(),
        Err(_) => EFS.to_vec(),
    };
    for ef in efs {
        let mut results = Vec::new();
        let (p50, p99) = time_queries(&queries, |q| {
            results.push(index.search_ef(q, K, ef).unwrap())
        });
        println!(
            "| ef = {ef} | {p50:.0} | {p99:.0} | {:.4} |",
            recall(&truth, &results)
        );
    }

    // Incremental cost: add ADDED vectors in batches of 1,000, compacting after each batch as a
    // worker would, and charge all of it to the batches.
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    for (batch, vectors) in added.chunks(1000 * dim).enumerate() {
        for (i, v) in vectors.chunks_exact(dim).enumerate() {
            index.insert((n + batch * 1000 + i) as u64, v).unwrap();
        }
        longest = longest.max(compact_timed(&mut index).1);
    }
    let per_batch = start.elapsed().as_secs_f64() / (ADDED / 1000) as f64;
    println!(
        "\nAdding {ADDED} vectors to {n} in batches of 1,000 (compacting after each): {per_batch:.2} s per 1,000 amortised, longest `compact` call {:.1} ms",
        longest.as_secs_f64() * 1e3
    );
}

/// Compacts until nothing is pending; returns the number of calls and the longest.
fn compact_timed(index: &mut Index) -> (usize, Duration) {
    let (mut calls, mut longest) = (0, Duration::ZERO);
    loop {
        let call = Instant::now();
        let step = index.compact();
        longest = longest.max(call.elapsed());
        calls += 1;
        if !step.pending {
            return (calls, longest);
        }
    }
}

/// The default configuration, with `BENCH_EFC` and `BENCH_F32_LIMIT` overriding
/// `ef_construction` and `f32_limit` (for exploring them).
fn config() -> Config {
    let mut config = Config::default();
    if let Ok(efc) = std::env::var("BENCH_EFC") {
        config.ef_construction = efc.parse().expect("BENCH_EFC");
    }
    if let Ok(limit) = std::env::var("BENCH_F32_LIMIT") {
        config.f32_limit = limit.parse().expect("BENCH_F32_LIMIT");
    }
    config
}

/// Runs `search` once per query and returns p50 and p99 in µs.
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

fn recall(truth: &[Vec<Hit>], found: &[Vec<Hit>]) -> f64 {
    let hits: usize = truth
        .iter()
        .zip(found)
        .map(|(t, f)| f.iter().filter(|h| t.iter().any(|x| x.id == h.id)).count())
        .sum();
    hits as f64 / (truth.len() * K) as f64
}
