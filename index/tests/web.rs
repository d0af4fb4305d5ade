//! The index on wasm32-unknown-unknown, the app's target (run by scripts/test.sh under Node):
//! graph builds, search, a save/load round trip, and the same bytes as a native build.
#![cfg(target_arch = "wasm32")]

use index::synthetic::Clusters;
use index::{Config, Index};
use wasm_bindgen_test::wasm_bindgen_test;

#[path = "determinism/scenario.rs"]
mod scenario;

#[wasm_bindgen_test]
fn builds_searches_and_round_trips_in_wasm() {
    let dim = 64;
    let data = Clusters::new(dim, 10, 4).sample(3000, 5);
    let config = Config {
        exact_limit: 500,
        ..Config::default()
    };
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
        exact.insert(id as u64, v).unwrap();
    }
    index.compact_all();
    assert_eq!(index.stats().graph_rows, 3000);
    let index = Index::from_bytes(&index.to_bytes()).unwrap();
    let mut found = 0;
    for query in data.chunks_exact(dim).step_by(30) {
        let truth = exact.search(query, 10).unwrap();
        let hits = index.search(query, 10).unwrap();
        found += hits
            .iter()
            .filter(|h| truth.iter().any(|t| t.id == h.id))
            .count();
    }
    let recall = found as f64 / (100 * 10) as f64;
    assert!(recall >= 0.98, "recall@10 {recall}");
}

/// The same operations give the same bytes here as natively (`tests/determinism.rs`).
#[wasm_bindgen_test]
fn same_bytes_as_native() {
    let all = scenario::all();
    let got: Vec<_> = all
        .iter()
        .map(|(name, a)| (*name, scenario::fingerprint(a)))
        .collect();
    let want: Vec<_> = all
        .iter()
        .map(|(name, _)| (*name, scenario::expected(name)))
        .collect();
    assert_eq!(got, want);
}
