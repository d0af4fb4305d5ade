//! recall@10 against exact f32 brute force, at the default configuration, with 10% of the ids
//! removed, on several kinds of data (CI-sized: 20k vectors; `examples/bench.rs` runs the same at
//! 100k and 1M): the bench mixture and many small overlapping clusters of very uneven size (both
//! 512-d, `index::synthetic`), and real embeddings (the demo collection through the demo model,
//! 64-d, plus noise). Both of the index's regimes are checked: searching by f32 rows (up to
//! `f32_limit`) and by int8 codes alone (beyond it, as at a million). Latency is measured by the
//! bench, not here.

use index::synthetic::{Distribution, around};
use index::{Config, Index};

const K: usize = 10;
const N: usize = 20_000;
const QUERIES: usize = 200;

/// The demo collection's 200 embeddings through the demo model (64-d little-endian f32; made by
/// `index/tests/data/make-demo-embeddings.sh`).
fn demo_embeddings() -> Vec<f32> {
    let bytes = include_bytes!("data/demo-embeddings.f32");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// recall@10 at `ef` (None: the default) of an index over `data` with every tenth id removed.
fn recall(
    dim: usize,
    data: &[f32],
    queries: &[f32],
    config: Config,
    efs: &[Option<usize>],
) -> Vec<f64> {
    let mut index = Index::with_config(dim, config).unwrap();
    let mut exact = Index::with_config(
        dim,
        Config {
            exact_limit: usize::MAX,
            ..Config::default()
        },
    )
    .unwrap();
    for (id, v) in data.chunks_exact(dim).enumerate() {
        index.insert(id as u64, v).unwrap();
        if id % 10 != 9 {
            exact.insert(id as u64, v).unwrap();
        }
    }
    index.compact_all();
    for id in (9..data.len() / dim).step_by(10) {
        index.remove(id as u64);
    }
    let stats = index.stats();
    assert_eq!(
        (stats.fresh, stats.graph_rows),
        (0, data.len() / dim),
        "{stats:?}"
    );
    let truth: Vec<_> = queries
        .chunks_exact(dim)
        .map(|q| exact.search(q, K).unwrap())
        .collect();
    let got: Vec<f64> = efs
        .iter()
        .map(|ef| {
            let mut found = 0;
            for (query, truth) in queries.chunks_exact(dim).zip(&truth) {
                let hits = match ef {
                    None => index.search(query, K).unwrap(),
                    Some(ef) => index.search_ef(query, K, *ef).unwrap(),
                };
                found += hits
                    .iter()
                    .filter(|h| truth.iter().any(|t| t.id == h.id))
                    .count();
            }
            found as f64 / (truth.len() * K) as f64
        })
        .collect();
    eprintln!("recall@10 at ef {efs:?}: {got:?}");
    got
}

fn int8_only() -> Config {
    Config {
        f32_limit: 0,
        ..Config::default()
    }
}

#[test]
fn mixture() {
    let d = Distribution::Mixture;
    let (data, queries) = (d.sample(512, N, 1, 2), d.sample(512, QUERIES, 1, 3));
    let f32_rows = recall(512, &data, &queries, Config::default(), &[None])[0];
    let codes = recall(512, &data, &queries, int8_only(), &[None])[0];
    assert!(
        f32_rows >= 0.98 && codes >= 0.90,
        "recall@10 {f32_rows} (f32), {codes} (int8)"
    );
}

/// A hard set for any HNSW: at 100k, hnswlib (M 16, efC 200) reaches 0.953 at ef 64 and 0.988
/// at ef 128, faiss HNSWFlat 0.982 and 0.987, we 0.973, 0.980 (ef 96, the default) and 0.983
/// (BENCHMARKS.md). Here, at 20k, measured 0.978 at the default and 0.987 at ef 128.
#[test]
fn many_small_uneven_overlapping_clusters() {
    let d = Distribution::Uneven;
    let (data, queries) = (d.sample(512, N, 1, 2), d.sample(512, QUERIES, 1, 3));
    let got = recall(512, &data, &queries, Config::default(), &[None, Some(128)]);
    assert!(
        got[0] >= 0.97 && got[1] >= 0.98,
        "recall@10 {got:?} (default ef, 128)"
    );
    let codes = recall(512, &data, &queries, int8_only(), &[Some(128)])[0];
    assert!(codes >= 0.97, "recall@10 {codes} (int8, ef 128)");
}

/// On int8 codes alone (beyond `f32_limit`) this set loses recall to quantisation: its neighbours
/// are noisy copies of the same 200 embeddings, 64-d, whose scores differ by less than the codes'
/// error. Measured 0.992 (f32) and 0.92 (int8) here; at 100k (f32) 0.936, where hnswlib has 0.914
/// at ef 64 and faiss HNSW-SQ8 0.837. The int8 floor pinned here is what we have, not the 0.98 we
/// want (BENCHMARKS.md).
#[test]
fn real_embeddings_with_noise() {
    let base = demo_embeddings();
    assert_eq!(base.len(), 200 * 64);
    let (data, queries) = (
        around(&base, 64, N, (0.2, 0.6), 2),
        around(&base, 64, QUERIES, (0.2, 0.6), 3),
    );
    let f32_rows = recall(64, &data, &queries, Config::default(), &[None])[0];
    let codes = recall(64, &data, &queries, int8_only(), &[None])[0];
    assert!(
        f32_rows >= 0.98 && codes >= 0.90,
        "recall@10 {f32_rows} (f32), {codes} (int8)"
    );
}
