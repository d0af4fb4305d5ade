//! Fixed sequences of operations whose `to_bytes` must be the same natively and in wasm. Shared
//! by `tests/determinism.rs` (native) and `tests/web.rs` (wasm32), which both compare with the
//! fingerprints in `expected`.

use index::synthetic::Rng;
use index::{Config, Index};

/// Clustered test vectors from basic arithmetic only: `synthetic`'s Gaussians go through `ln` and
/// `cos`, whose last bits differ between glibc and the wasm libm, so they would make the inputs,
/// not the index, differ.
fn portable_clusters(dim: usize, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(4);
    let mut noise = || (rng.uniform() + rng.uniform() + rng.uniform() - 1.5) as f32;
    let centers: Vec<Vec<f32>> = (0..12)
        .map(|_| (0..dim).map(|_| 1.0 + noise()).collect())
        .collect();
    (0..n)
        .flat_map(|i| {
            centers[i * 7 % 12]
                .iter()
                .map(|c| c + 0.5 * noise())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Each scenario's name and the index bytes it ends with.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("clusters, f32 rows", run(Config::default())),
        (
            "clusters, int8 codes",
            run(Config {
                f32_limit: 0,
                ..Config::default()
            }),
        ),
    ]
}

/// Inserts, replacements, removals (past the tombstone bound, so a rebuild runs) and compactions
/// interleaved, over 6,000 64-d vectors.
fn run(config: Config) -> Vec<u8> {
    let dim = 64;
    let data = portable_clusters(dim, 6000);
    let mut index = Index::with_config(
        dim,
        Config {
            exact_limit: 1000,
            ..config
        },
    )
    .unwrap();
    for (i, v) in data.chunks_exact(dim).enumerate() {
        index.insert((i % 5000) as u64, v).unwrap();
        if i % 3 == 0 && i > 3000 {
            index.remove((i / 2) as u64);
        }
        if i % 40 == 0 {
            index.compact();
        }
    }
    index.compact_all();
    index.to_bytes()
}

/// Length and 64-bit FNV-1a hash of the bytes (not a CRC-32: the bytes end with their own, and
/// the CRC of a message followed by its CRC is a constant). The native test also compares the
/// bytes of two runs whole.
pub fn fingerprint(bytes: &[u8]) -> (usize, u64) {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (bytes.len(), hash)
}

pub fn expected(name: &str) -> (usize, u64) {
    match name {
        "clusters, f32 rows" => (1_951_950, 5_403_131_053_544_569_407),
        "clusters, int8 codes" => (876_750, 13_109_752_378_142_557_590),
        _ => unreachable!("{name}"),
    }
}
