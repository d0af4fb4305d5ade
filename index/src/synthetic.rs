//! Seeded synthetic embeddings for tests and benchmarks.
//!
//! Real collections are clumpy: many near-duplicates of a few kinds of image, sharing a common
//! direction (CLIP embeddings sit in a narrow cone). [`Clusters`] draws from a mixture of
//! anisotropic Gaussian clusters of uneven sizes around a shared offset, which is harder for a
//! graph index than uniform noise. [`Distribution`] names the kinds the index is tested and
//! benchmarked on, so that its defaults are not tuned to one of them.

/// SplitMix64: small, fast, seedable; good enough for test data (not for anything secret).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let v = self.uniform();
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// How a [`Clusters`] mixture is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// Standard deviation of the cluster centres around the shared offset (per axis).
    pub center_spread: f32,
    /// Log-normal sigma of the cluster weights: 0.7 gives sizes within a few times of each
    /// other, 2 gives a few huge clusters and many tiny ones.
    pub weight_sigma: f64,
}

impl Shape {
    /// The bench mixture (the shape of [`Clusters::new`]).
    pub const MIXTURE: Shape = Shape {
        center_spread: 1.0,
        weight_sigma: 0.7,
    };
    /// Many small clusters of very uneven size whose centres overlap.
    pub const UNEVEN: Shape = Shape {
        center_spread: 0.7,
        weight_sigma: 2.0,
    };
}

/// The kinds of data the index must hold its recall on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// 100 anisotropic clusters of moderately uneven size ([`Shape::MIXTURE`]).
    Mixture,
    /// 1,000 small overlapping clusters of very uneven size ([`Shape::UNEVEN`]).
    Uneven,
    /// Near-uniform on the sphere: independent Gaussian coordinates, per-axis scales 0.8–1.25.
    Sphere,
}

impl Distribution {
    pub const ALL: [Distribution; 3] = [Self::Mixture, Self::Uneven, Self::Sphere];

    pub fn name(self) -> &'static str {
        match self {
            Self::Mixture => "mixture",
            Self::Uneven => "uneven",
            Self::Sphere => "sphere",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// `n` points (row-major, not normalised) of this distribution in `dim` dimensions; `seed`
    /// fixes the distribution, `draw` the sample (queries use another `draw`).
    pub fn sample(self, dim: usize, n: usize, seed: u64, draw: u64) -> Vec<f32> {
        match self {
            Self::Mixture => Clusters::new(dim, 100, seed).sample(n, draw),
            Self::Uneven => Clusters::with_shape(dim, 1000, Shape::UNEVEN, seed).sample(n, draw),
            Self::Sphere => {
                let mut rng = Rng::new(seed);
                let scales: Vec<f32> = (0..dim)
                    .map(|_| 0.8 * 1.5625f32.powf(rng.uniform() as f32))
                    .collect();
                let mut rng = Rng::new(draw.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(7));
                (0..n * dim)
                    .map(|i| scales[i % dim] * rng.normal())
                    .collect()
            }
        }
    }
}

/// `n` points around the rows of `base` (`dim` wide, e.g. real embeddings): each is a random
/// base row (unit length) plus isotropic Gaussian noise of a length drawn uniformly from
/// `noise` (relative to the unit row), so neighbourhoods have many scales.
pub fn around(base: &[f32], dim: usize, n: usize, noise: (f32, f32), draw: u64) -> Vec<f32> {
    let rows: Vec<&[f32]> = base.chunks_exact(dim).collect();
    let mut rng = Rng::new(draw.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(3));
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let row = rows[rng.below(rows.len())];
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        let length = noise.0 + (noise.1 - noise.0) * rng.uniform() as f32;
        let sigma = length / (dim as f32).sqrt();
        out.extend(row.iter().map(|x| x / norm + sigma * rng.normal()));
    }
    out
}

/// A mixture of anisotropic Gaussian clusters in `dim` dimensions.
#[derive(Clone, Debug)]
pub struct Clusters {
    dim: usize,
    centers: Vec<Vec<f32>>,
    /// Per-cluster, per-axis standard deviations.
    spreads: Vec<Vec<f32>>,
    /// Per-cluster directions of extra, correlated variation (`RANK` of them).
    directions: Vec<Vec<Vec<f32>>>,
    /// Cumulative cluster probabilities.
    cumulative: Vec<f64>,
}

const RANK: usize = 4;

impl Clusters {
    /// `count` clusters of the bench mixture's shape, fixed by `seed`.
    pub fn new(dim: usize, count: usize, seed: u64) -> Self {
        Self::with_shape(dim, count, Shape::MIXTURE, seed)
    }

    /// `count` clusters of `shape`, fixed by `seed`.
    pub fn with_shape(dim: usize, count: usize, shape: Shape, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let shared: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        let mut centers = Vec::with_capacity(count);
        let mut spreads = Vec::with_capacity(count);
        let mut directions = Vec::with_capacity(count);
        let mut weights = Vec::with_capacity(count);
        for _ in 0..count {
            centers.push(
                shared
                    .iter()
                    .map(|s| s + shape.center_spread * rng.normal())
                    .collect(),
            );
            let scale = 0.3 + 0.4 * rng.uniform() as f32;
            spreads.push(
                (0..dim)
                    .map(|_| scale * (0.5 * rng.normal()).exp())
                    .collect(),
            );
            directions.push(
                (0..RANK)
                    .map(|_| (0..dim).map(|_| 0.4 * rng.normal()).collect())
                    .collect(),
            );
            weights.push((shape.weight_sigma * rng.normal() as f64).exp());
        }
        let total: f64 = weights.iter().sum();
        let cumulative = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        Self {
            dim,
            centers,
            spreads,
            directions,
            cumulative,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `n` points, row-major (`n × dim`), not normalised; `seed` picks the draw.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1));
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let u = rng.uniform();
            let c = self
                .cumulative
                .partition_point(|&p| p < u)
                .min(self.centers.len() - 1);
            let weights: [f32; RANK] = std::array::from_fn(|_| rng.normal());
            for j in 0..self.dim {
                let mut x = self.centers[c][j] + self.spreads[c][j] * rng.normal();
                for (w, direction) in weights.iter().zip(&self.directions[c]) {
                    x += w * direction[j];
                }
                out.push(x);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_seed_dependent() {
        let clusters = Clusters::new(16, 5, 42);
        assert_eq!(
            clusters.sample(10, 1),
            Clusters::new(16, 5, 42).sample(10, 1)
        );
        assert_ne!(clusters.sample(10, 1), clusters.sample(10, 2));
        let mut rng = Rng::new(0);
        let mean = (0..10_000).map(|_| rng.normal() as f64).sum::<f64>() / 10_000.0;
        assert!(mean.abs() < 0.05, "{mean}");
    }
}
