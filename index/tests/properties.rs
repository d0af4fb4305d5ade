//! Random sequences of inserts, re-inserts, removals, compactions and save/load, checked after
//! every step against a brute-force model: exactly while the index is exact, by recall (and
//! exact scores for what it returns) once it has HNSW segments. Removed ids never come back.
//!
//! Seeded loops rather than a property-testing crate: the cases are reproducible from the seed
//! printed on failure, and the crate stays dependency-free for its tests.

use std::collections::HashMap;

use index::synthetic::{Clusters, Rng};
use index::{Config, Hit, Index};

const DIM: usize = 24;

/// The brute-force model: live ids and their unit vectors.
#[derive(Default)]
struct Model(HashMap<u64, Vec<f32>>);

impl Model {
    fn insert(&mut self, id: u64, v: &[f32]) {
        let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        self.0
            .insert(id, v.iter().map(|x| (*x as f64 / norm) as f32).collect());
    }

    fn score(&self, id: u64, query: &[f32]) -> Option<f64> {
        let v = self.0.get(&id)?;
        let norm = query
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        Some(
            v.iter()
                .zip(query)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                / norm,
        )
    }

    fn search(&self, query: &[f32], k: usize) -> Vec<(u64, f64)> {
        let mut all: Vec<(u64, f64)> = self
            .0
            .keys()
            .map(|&id| (id, self.score(id, query).unwrap()))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

/// Checks `hits` against the model: well-formed always, and either exactly the model's answer or
/// at least `min_recall` of it. Returns the number of true top-k ids found.
fn check(
    hits: &[Hit],
    model: &Model,
    query: &[f32],
    k: usize,
    exact: bool,
    tolerance: f64,
    context: &str,
) -> usize {
    let want = model.search(query, k);
    assert_eq!(hits.len(), want.len(), "{context}: result count");
    for pair in hits.windows(2) {
        assert!(
            pair[0].score >= pair[1].score,
            "{context}: not sorted: {hits:?}"
        );
    }
    for (i, hit) in hits.iter().enumerate() {
        let Some(score) = model.score(hit.id, query) else {
            panic!("{context}: id {} was removed or never inserted", hit.id);
        };
        assert!(
            (hit.score as f64 - score).abs() < tolerance,
            "{context}: score of {}: {} vs {score}",
            hit.id,
            hit.score
        );
        assert!(
            hits[..i].iter().all(|h| h.id != hit.id),
            "{context}: duplicate {}",
            hit.id
        );
    }
    if exact {
        // The same ranking; ids may swap only where the model's scores tie (to f32 rounding).
        for (hit, (id, score)) in hits.iter().zip(&want) {
            let got = model.score(hit.id, query).unwrap();
            assert!(
                hit.id == *id || (got - score).abs() < 1e-6,
                "{context}: exact search differs from brute force: {hits:?} vs {want:?}"
            );
        }
    }
    hits.iter()
        .filter(|h| want.iter().any(|w| w.0 == h.id))
        .count()
}

/// Runs `steps` random operations; returns recall over all searches.
fn run(seed: u64, config: Config, steps: usize, exact: bool, tolerance: f64) -> f64 {
    let clusters = Clusters::new(DIM, 6, seed);
    let pool = clusters.sample(steps, seed);
    let mut rng = Rng::new(seed);
    let mut index = Index::with_config(DIM, config).unwrap();
    let mut model = Model::default();
    let mut removed: Vec<u64> = Vec::new();
    let (mut found, mut wanted) = (0, 0);
    let mut graphs_seen = false;
    for step in 0..steps {
        let context = format!("seed {seed}, step {step}");
        let vector = &pool[step * DIM..][..DIM];
        let ids: Vec<u64> = model.0.keys().copied().collect();
        match rng.below(100) {
            // Insert a new id (ids are sparse so that collisions with removed ones happen).
            0..=59 => {
                let id = rng.below(steps * 2) as u64;
                index.insert(id, vector).unwrap();
                model.insert(id, vector);
                removed.retain(|&r| r != id);
            }
            // Replace an existing id's vector.
            60..=64 if !ids.is_empty() => {
                let id = ids[rng.below(ids.len())];
                index.insert(id, vector).unwrap();
                model.insert(id, vector);
            }
            65..=84 if !ids.is_empty() => {
                let id = ids[rng.below(ids.len())];
                assert!(index.remove(id), "{context}: remove {id}");
                model.0.remove(&id);
                removed.push(id);
            }
            85..=89 => {
                let id = u64::MAX - rng.below(5) as u64;
                assert!(!index.remove(id), "{context}: removed an absent id");
            }
            90..=95 => {
                index.compact();
            }
            _ => {
                let bytes = index.to_bytes();
                index = Index::from_bytes(&bytes).unwrap();
            }
        }
        assert_eq!(index.len(), model.0.len(), "{context}: len");
        graphs_seen |= index.stats().graph_rows > 0;
        if step % 5 == 0 && !model.0.is_empty() {
            let query = &pool[rng.below(steps) * DIM..][..DIM];
            let k = 1 + rng.below(12);
            let hits = index.search(query, k).unwrap();
            found += check(&hits, &model, query, k, exact, tolerance, &context);
            wanted += hits.len();
            for id in &removed {
                assert!(!index.contains(*id), "{context}: removed id {id} is back");
            }
        }
    }
    assert_eq!(graphs_seen, !exact, "seed {seed}: a graph built");
    found as f64 / wanted.max(1) as f64
}

#[test]
fn exact_index_equals_brute_force() {
    let config = Config {
        exact_limit: usize::MAX,
        ..Config::default()
    };
    for seed in 0..6 {
        let recall = run(seed, config.clone(), 600, true, 1e-5);
        assert_eq!(recall, 1.0);
    }
}

/// Small steps and a low tombstone bound, so that rebuilds start and run between operations.
fn graph_config(f32_limit: usize) -> Config {
    Config {
        exact_limit: 60,
        step_rows: 24,
        max_dead_fraction: 0.2,
        ef_construction: 32,
        ef_search: 32,
        f32_limit,
        ..Config::default()
    }
}

#[test]
fn index_with_a_graph_keeps_recall() {
    let config = graph_config(Config::default().f32_limit);
    let mut total = 0.0;
    let seeds = 6;
    for seed in 100..100 + seeds {
        let recall = run(seed, config.clone(), 1500, false, 1e-5);
        assert!(recall >= 0.95, "seed {seed}: recall {recall}");
        total += recall;
    }
    let mean = total / seeds as f64;
    assert!(mean >= 0.98, "mean recall {mean}");
}

/// The same with only the int8 codes (as beyond `f32_limit`): scores are approximate, to the
/// quantisation bound of 24-d codes.
#[test]
fn index_on_int8_codes_keeps_recall() {
    let config = graph_config(0);
    let mut total = 0.0;
    let seeds = 6;
    for seed in 200..200 + seeds {
        total += run(seed, config.clone(), 1500, false, 0.02);
    }
    let mean = total / seeds as f64;
    assert!(mean >= 0.95, "mean recall {mean}");
}
