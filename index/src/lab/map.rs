//! The embedding map: 2-D projections of a collection.
//!
//! - [`pca`]: the top principal components by subspace iteration on the centred rows (never
//!   forming the d×d covariance), signs fixed as scikit-learn's `svd_flip` (each component's
//!   largest entry positive). Instant: the preview.
//! - [`umap`]: UMAP (McInnes et al. 2018) as `umap-learn` computes it with its defaults
//!   (15 neighbours, `min_dist` 0.1, spread 1): exact k-nearest neighbours by Euclidean distance
//!   of the normalised embeddings (the cosine order), the fuzzy simplicial set (per-point ρ and σ,
//!   fuzzy union), and the layout by SGD with negative sampling, edges sampled in proportion to
//!   their weight. Started from the PCA layout instead of the spectral one (umap's `init="pca"`),
//!   seeded and deterministic.
//! - [`trustworthiness`]: scikit-learn's `sklearn.manifold.trustworthiness` (Euclidean).

use super::shuffle;
use crate::synthetic::Rng;

/// Rows as normalised f32 vectors, side by side.
fn unit_rows(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    rows.iter().map(|r| super::normalized(r)).collect()
}

/// The top `k` principal components of `rows` and the rows projected on them.
#[derive(Clone, Debug, PartialEq)]
pub struct Pca {
    /// `k` unit vectors of the input's width.
    pub components: Vec<Vec<f64>>,
    /// Variance along each component, and its share of the total.
    pub explained_variance: Vec<f64>,
    pub explained_ratio: Vec<f64>,
    pub projected: Vec<Vec<f32>>,
}

pub fn pca(rows: &[Vec<f32>], k: usize, seed: u64) -> Pca {
    let n = rows.len();
    let d = rows.first().map_or(0, Vec::len);
    let k = k.min(d).min(n.max(1));
    let mut mean = vec![0f64; d];
    for r in rows {
        mean.iter_mut().zip(r).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let centred: Vec<Vec<f64>> = rows.iter().map(|r| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect()).collect();
    let total: f64 = centred.iter().map(|r| r.iter().map(|v| v * v).sum::<f64>()).sum::<f64>() / (n.max(2) - 1) as f64;
    // Subspace iteration with a few extra vectors (faster convergence of the first k).
    let m = (k + 4).min(d);
    let mut rng = Rng::new(seed);
    let mut q: Vec<Vec<f64>> = (0..m).map(|_| (0..d).map(|_| rng.normal() as f64).collect()).collect();
    orthonormalize(&mut q);
    // The operator XᵀX: as the d×d scatter matrix when that is smaller than the data (CLIP's
    // 512-1024 dims, thousands of rows: one pass over the rows, then cheap iterations), else
    // applied through the rows on every iteration.
    let scatter = (d <= 2048 && n > d).then(|| {
        let mut s = vec![0f64; d * d];
        for r in &centred {
            for a in 0..d {
                let ra = r[a];
                s[a * d + a..(a + 1) * d].iter_mut().zip(&r[a..]).for_each(|(x, &rb)| *x += ra * rb);
            }
        }
        for a in 0..d {
            for b in 0..a {
                s[a * d + b] = s[b * d + a];
            }
        }
        s
    });
    let apply = |q: &[Vec<f64>]| -> Vec<Vec<f64>> {
        match &scatter {
            Some(s) => q.iter().map(|qj| s.chunks(d).map(|row| row.iter().zip(qj).map(|(a, b)| a * b).sum()).collect()).collect(),
            None => {
                let mut next = vec![vec![0f64; d]; q.len()];
                for r in &centred {
                    for (j, qj) in q.iter().enumerate() {
                        let p: f64 = r.iter().zip(qj).map(|(a, b)| a * b).sum();
                        next[j].iter_mut().zip(r).for_each(|(x, v)| *x += p * v);
                    }
                }
                next
            }
        }
    };
    let mut previous = vec![0.0; k];
    for _ in 0..if scatter.is_some() { 2000 } else { 300 } {
        let next = apply(&q);
        let norms: Vec<f64> = next.iter().map(|v| v.iter().map(|x| x * x).sum::<f64>().sqrt()).collect();
        q = next;
        // Rayleigh–Ritz would order them; Gram–Schmidt in order keeps the dominant first.
        orthonormalize(&mut q);
        let done = norms[..k].iter().zip(&previous).all(|(a, b)| (a - b).abs() <= 1e-12 * a.abs().max(1e-300));
        previous = norms[..k].to_vec();
        if done {
            break;
        }
    }
    // Rayleigh–Ritz on the m-dimensional subspace: the exact eigenvectors within it, in order.
    let aq = apply(&q);
    let small: Vec<Vec<f64>> = q.iter().map(|qa| aq.iter().map(|qb| qa.iter().zip(qb).map(|(x, y)| x * y).sum()).collect()).collect();
    let (values, vectors) = jacobi_eigen(small);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut components = Vec::new();
    let mut explained_variance = Vec::new();
    for &e in order.iter().take(k) {
        let mut c = vec![0f64; d];
        for (j, qj) in q.iter().enumerate() {
            c.iter_mut().zip(qj).for_each(|(x, v)| *x += vectors[j][e] * v);
        }
        // svd_flip: the entry of largest magnitude positive.
        let big = c.iter().fold(0.0f64, |b, &v| if v.abs() > b.abs() { v } else { b });
        if big < 0.0 {
            c.iter_mut().for_each(|v| *v = -*v);
        }
        components.push(c);
        explained_variance.push(values[e] / (n.max(2) - 1) as f64);
    }
    let projected = centred
        .iter()
        .map(|r| components.iter().map(|c| r.iter().zip(c).map(|(a, b)| a * b).sum::<f64>() as f32).collect())
        .collect();
    let explained_ratio = explained_variance.iter().map(|v| if total > 0.0 { v / total } else { 0.0 }).collect();
    Pca { components, explained_variance, explained_ratio, projected }
}

fn orthonormalize(q: &mut [Vec<f64>]) {
    for i in 0..q.len() {
        for j in 0..i {
            let p: f64 = q[i].iter().zip(&q[j]).map(|(a, b)| a * b).sum();
            let (head, tail) = q.split_at_mut(i);
            tail[0].iter_mut().zip(&head[j]).for_each(|(a, b)| *a -= p * b);
        }
        let norm = q[i].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            q[i].iter_mut().for_each(|v| *v /= norm);
        }
    }
}

/// Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations: the values and
/// the vectors as columns.
#[allow(clippy::needless_range_loop)] // rotations index two columns of every row
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    for _ in 0..100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i][j] * a[i][j]).sum();
        let scale: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum::<f64>().max(1e-300);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k][p], v[k][q]);
                    v[k][p] = c * vkp - s * vkq;
                    v[k][q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

/// Each row's `k` nearest other rows by Euclidean distance, nearest first, with the distances.
/// Exact: n²·d/2 multiply-adds over the normalised rows. `progress(done, n)` per row block.
pub fn nearest(rows: &[Vec<f32>], k: usize, progress: &mut dyn FnMut(usize, usize)) -> Vec<Vec<(usize, f32)>> {
    let unit = unit_rows(rows);
    let n = unit.len();
    let k = k.min(n.saturating_sub(1));
    let mut best: Vec<Vec<(usize, f32)>> = vec![Vec::with_capacity(k + 1); n];
    let push = |list: &mut Vec<(usize, f32)>, j: usize, d: f32| {
        if list.len() == k && list.last().is_some_and(|&(_, w)| d >= w) {
            return;
        }
        let at = list.partition_point(|&(_, w)| w <= d);
        list.insert(at, (j, d));
        list.truncate(k);
    };
    for i in 0..n {
        for j in i + 1..n {
            let d2 = (2.0 - 2.0 * crate::kernel::dot(&unit[i], &unit[j])).max(0.0);
            let d = d2.sqrt();
            push(&mut best[i], j, d);
            push(&mut best[j], i, d);
        }
        if i % 256 == 255 || i + 1 == n {
            progress(i + 1, n);
        }
    }
    best
}

#[derive(Clone, Debug, PartialEq)]
pub struct UmapOptions {
    pub neighbors: usize,
    /// Optimisation epochs; `None`: umap-learn's 500 up to 10,000 points, 200 above.
    pub epochs: Option<usize>,
    pub negative_samples: usize,
    pub seed: u64,
}

impl Default for UmapOptions {
    fn default() -> Self {
        UmapOptions { neighbors: 15, epochs: None, negative_samples: 5, seed: 0 }
    }
}

/// `a`, `b` of the low-dimensional similarity `1 / (1 + a d^{2b})` that umap-learn fits for
/// `min_dist = 0.1`, `spread = 1`.
const A: f32 = 1.576_943_5;
const B: f32 = 0.895_060_6;

/// The fuzzy simplicial set: symmetric edge weights from each row's neighbours.
fn fuzzy_graph(knn: &[Vec<(usize, f32)>]) -> Vec<(usize, usize, f32)> {
    let n = knn.len();
    let mut directed: Vec<std::collections::HashMap<usize, f32>> = vec![Default::default(); n];
    let mean_all: f64 = {
        let (s, c) = knn.iter().flatten().fold((0.0f64, 0usize), |(s, c), &(_, d)| (s + d as f64, c + 1));
        if c > 0 { s / c as f64 } else { 0.0 }
    };
    for (i, list) in knn.iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        // umap counts the point itself among its n_neighbors: the target is log2(k + 1).
        let target = ((list.len() + 1) as f64).log2();
        let rho = list.iter().map(|&(_, d)| d as f64).find(|&d| d > 0.0).unwrap_or(0.0);
        let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
        for _ in 0..64 {
            let psum: f64 = list.iter().map(|&(_, d)| {
                let d = d as f64 - rho;
                if d > 0.0 { (-d / mid).exp() } else { 1.0 }
            }).sum();
            if (psum - target).abs() < 1e-5 {
                break;
            }
            if psum > target {
                hi = mid;
                mid = (lo + hi) / 2.0;
            } else {
                lo = mid;
                mid = if hi.is_infinite() { mid * 2.0 } else { (lo + hi) / 2.0 };
            }
        }
        let mean_i = list.iter().map(|&(_, d)| d as f64).sum::<f64>() / list.len() as f64;
        let floor = 1e-3 * if rho > 0.0 { mean_i } else { mean_all };
        let sigma = mid.max(floor);
        for &(j, d) in list {
            let w = if (d as f64) - rho <= 0.0 { 1.0 } else { (-((d as f64) - rho) / sigma).exp() };
            directed[i].insert(j, w as f32);
        }
    }
    let mut edges = Vec::new();
    for i in 0..n {
        for (&j, &w) in &directed[i] {
            let back = directed[j].get(&i).copied().unwrap_or(0.0);
            if back > 0.0 && j < i {
                continue; // the pair was emitted from j's side
            }
            let union = w + back - w * back;
            edges.push((i.min(j), i.max(j), union));
        }
    }
    edges.sort_by_key(|e| (e.0, e.1));
    edges
}

/// A UMAP layout of `rows` in 2-D. `progress(done, total)` over the neighbour search (the first
/// half) and the epochs (the second).
pub fn umap(rows: &[Vec<f32>], options: &UmapOptions, progress: &mut dyn FnMut(usize, usize)) -> Vec<[f32; 2]> {
    let n = rows.len();
    if n <= 2 {
        return (0..n).map(|i| [i as f32, 0.0]).collect();
    }
    let epochs = options.epochs.unwrap_or(if n <= 10_000 { 500 } else { 200 });
    let total = 2 * n;
    let knn = nearest(rows, options.neighbors, &mut |d, _| progress(d, total));
    let mut edges = fuzzy_graph(&knn);
    let max_w = edges.iter().map(|e| e.2).fold(0.0f32, f32::max);
    edges.retain(|e| e.2 >= max_w / epochs as f32);
    // Start from PCA, scaled into [0, 10] per axis, as umap-learn scales its initial layout.
    let start = pca(rows, 2, options.seed).projected;
    let mut y: Vec<[f32; 2]> = start.iter().map(|p| [p[0], p.get(1).copied().unwrap_or(0.0)]).collect();
    for axis in 0..2 {
        let (lo, hi) = y.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), p| (l.min(p[axis]), h.max(p[axis])));
        let span = if hi > lo { hi - lo } else { 1.0 };
        y.iter_mut().for_each(|p| p[axis] = 10.0 * (p[axis] - lo) / span);
    }
    let mut rng = Rng::new(options.seed ^ 0x5EED);
    // A little noise breaks exact ties (duplicates) so that they can separate.
    y.iter_mut().for_each(|p| {
        p[0] += 1e-4 * rng.normal();
        p[1] += 1e-4 * rng.normal();
    });
    let per_sample: Vec<f32> = edges.iter().map(|e| max_w / e.2).collect();
    let per_negative: Vec<f32> = per_sample.iter().map(|e| e / options.negative_samples as f32).collect();
    let mut next_sample = per_sample.clone();
    let mut next_negative = per_negative.clone();
    let mut order: Vec<usize> = (0..edges.len()).collect();
    let clip = |v: f32| v.clamp(-4.0, 4.0);
    for epoch in 0..epochs {
        let alpha = 1.0 - epoch as f32 / epochs as f32;
        shuffle(&mut order, &mut rng);
        for &e in &order {
            if next_sample[e] > epoch as f32 {
                continue;
            }
            let (i, j, _) = edges[e];
            let (pi, pj) = (y[i], y[j]);
            let d2 = (pi[0] - pj[0]).powi(2) + (pi[1] - pj[1]).powi(2);
            if d2 > 0.0 {
                let coeff = -2.0 * A * B * d2.powf(B - 1.0) / (A * d2.powf(B) + 1.0);
                for a in 0..2 {
                    let g = clip(coeff * (pi[a] - pj[a])) * alpha;
                    y[i][a] += g;
                    y[j][a] -= g;
                }
            }
            next_sample[e] += per_sample[e];
            let negatives = ((epoch as f32 - next_negative[e]) / per_negative[e]).floor().max(0.0) as usize + 1;
            for _ in 0..negatives {
                let k = rng.below(n);
                if k == i {
                    continue;
                }
                let (pi, pk) = (y[i], y[k]);
                let d2 = (pi[0] - pk[0]).powi(2) + (pi[1] - pk[1]).powi(2);
                let coeff = if d2 > 0.0 { 2.0 * B / ((0.001 + d2) * (A * d2.powf(B) + 1.0)) } else { 0.0 };
                for a in 0..2 {
                    let g = if coeff > 0.0 { clip(coeff * (pi[a] - pk[a])) } else { 4.0 };
                    y[i][a] += g * alpha;
                }
            }
            next_negative[e] += negatives as f32 * per_negative[e];
        }
        progress(n + (epoch + 1) * n / epochs, total);
    }
    y
}

/// scikit-learn's trustworthiness of a layout at `k` neighbours: 1 − 2/(n k (2n − 3k − 1)) ·
/// Σᵢ Σ_{j ∈ layout's kNN(i)} max(0, r(i, j) − k), r the rank of j among i's neighbours in the
/// original space (Euclidean; 1 = nearest). n²·d work: meant for up to a few thousand rows.
pub fn trustworthiness(high: &[Vec<f32>], low: &[[f32; 2]], k: usize) -> f64 {
    let n = high.len();
    assert_eq!(n, low.len(), "one layout point per row");
    if n < 3 || k == 0 || 2 * n < 3 * k + 2 {
        return 1.0;
    }
    let mut penalty = 0f64;
    let mut dist = vec![0f32; n];
    for i in 0..n {
        for j in 0..n {
            dist[j] = if j == i {
                f32::INFINITY
            } else {
                high[i].iter().zip(&high[j]).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
            };
        }
        // The layout's k nearest (Euclidean, ties by index as a stable sort would).
        let mut near: Vec<(f32, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| ((low[i][0] - low[j][0]).powi(2) + (low[i][1] - low[j][1]).powi(2), j))
            .collect();
        near.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, j) in &near[..k] {
            let rank = 1 + (0..n).filter(|&l| dist[l] < dist[j] || (dist[l] == dist[j] && l < j)).count();
            if rank > k {
                penalty += (rank - k) as f64;
            }
        }
    }
    1.0 - penalty * 2.0 / (n as f64 * k as f64 * (2.0 * n as f64 - 3.0 * k as f64 - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_long_axis() {
        let mut rng = Rng::new(1);
        let rows: Vec<Vec<f32>> = (0..200).map(|_| vec![3.0 * rng.normal(), 0.5 * rng.normal(), 0.1 * rng.normal()]).collect();
        let p = pca(&rows, 2, 0);
        assert!(p.components[0][0].abs() > 0.99 && p.components[1][1].abs() > 0.99, "{:?}", p.components);
        assert!(p.explained_ratio[0] > 0.9);
    }

    #[test]
    fn a_perfect_layout_is_trustworthy() {
        let mut rng = Rng::new(2);
        let pts: Vec<[f32; 2]> = (0..60).map(|_| [rng.normal(), rng.normal()]).collect();
        let high: Vec<Vec<f32>> = pts.iter().map(|p| vec![p[0], p[1], 0.0]).collect();
        assert!((trustworthiness(&high, &pts, 5) - 1.0).abs() < 1e-12);
        let shuffled: Vec<[f32; 2]> = (0..60).map(|_| [rng.normal(), rng.normal()]).collect();
        assert!(trustworthiness(&high, &shuffled, 5) < 0.7);
    }
}
