//! recall@10 against brute force on clustered 512-d synthetic embeddings (a mixture of
//! anisotropic Gaussian clusters, fixed seed), with the default configuration and `ef`, at 10k
//! and 100k vectors. Latency is measured by `examples/bench.rs`, not here.

use index::synthetic::Clusters;
use index::{Config, Index};

const DIM: usize = 512;
const K: usize = 10;

fn recall_at(n: usize, queries: usize) -> (f64, index::Stats) {
    let clusters = Clusters::new(DIM, 100, 1);
    let data = clusters.sample(n, 2);
    let queries = clusters.sample(queries, 3);
    let mut index = Index::new(DIM).unwrap();
    let mut exact = Index::with_config(DIM, Config { exact_limit: usize::MAX, ..Config::default() })
        .unwrap();
    for (id, v) in data.chunks_exact(DIM).enumerate() {
        index.insert(id as u64, v).unwrap();
        exact.insert(id as u64, v).unwrap();
    }
    index.compact_all();
    let mut found = 0;
    for query in queries.chunks_exact(DIM) {
        let truth = exact.search(query, K).unwrap();
        let hits = index.search(query, K).unwrap();
        found += hits.iter().filter(|h| truth.iter().any(|t| t.id == h.id)).count();
    }
    (found as f64 / (queries.len() / DIM * K) as f64, index.stats())
}

#[test]
fn recall_at_10k() {
    let (recall, stats) = recall_at(10_000, 300);
    assert!(!stats.graph_segments.is_empty(), "{stats:?}");
    assert!(recall >= 0.98, "recall@10 {recall} ({stats:?})");
}

#[test]
fn recall_at_100k() {
    let (recall, stats) = recall_at(100_000, 200);
    assert!(stats.graph_segments.len() >= 2, "{stats:?}");
    assert!(recall >= 0.98, "recall@10 {recall} ({stats:?})");
}
