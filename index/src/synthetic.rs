//! Seeded synthetic embeddings for tests and benchmarks.
//!
//! Real collections are clumpy: many near-duplicates of a few kinds of image, sharing a common
//! direction (CLIP embeddings sit in a narrow cone). [`Clusters`] draws from a mixture of
//! anisotropic Gaussian clusters of uneven sizes around a shared offset, which is harder for a
//! graph index than uniform noise.

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
    /// `count` clusters, fixed by `seed`.
    pub fn new(dim: usize, count: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let shared: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        let mut centers = Vec::with_capacity(count);
        let mut spreads = Vec::with_capacity(count);
        let mut directions = Vec::with_capacity(count);
        let mut weights = Vec::with_capacity(count);
        for _ in 0..count {
            centers.push(shared.iter().map(|s| s + rng.normal()).collect());
            let scale = 0.3 + 0.4 * rng.uniform() as f32;
            spreads.push((0..dim).map(|_| scale * (0.5 * rng.normal()).exp()).collect());
            directions.push(
                (0..RANK)
                    .map(|_| (0..dim).map(|_| 0.4 * rng.normal()).collect())
                    .collect(),
            );
            weights.push((0.7 * rng.normal() as f64).exp());
        }
        let total: f64 = weights.iter().sum();
        let cumulative = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        Self { dim, centers, spreads, directions, cumulative }
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
            let c = self.cumulative.partition_point(|&p| p < u).min(self.centers.len() - 1);
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
        assert_eq!(clusters.sample(10, 1), Clusters::new(16, 5, 42).sample(10, 1));
        assert_ne!(clusters.sample(10, 1), clusters.sample(10, 2));
        let mut rng = Rng::new(0);
        let mean = (0..10_000).map(|_| rng.normal() as f64).sum::<f64>() / 10_000.0;
        assert!(mean.abs() < 0.05, "{mean}");
    }
}
