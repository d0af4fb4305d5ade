//! Linear probes: L2-regularised multinomial logistic regression on normalised embeddings.
//!
//! The objective is scikit-learn's `LogisticRegression(penalty="l2", C)` with an unpenalised
//! intercept, `Σᵢ −log softmax(W xᵢ + b)[yᵢ] + ‖W‖² / (2C)` (divided by n, which moves no
//! optimum), minimised by L-BFGS in f64 to a gradient of 1e-7. C is chosen from [`CS`] by
//! stratified k-fold cross-validation on the training part only (mean accuracy, the smallest C
//! of equals, as `LogisticRegressionCV`), along a warm-started path; the split into training and
//! test parts is stratified and seeded.

use serde::{Deserialize, Serialize};

use super::metrics::Metrics;
use super::shuffle;
use crate::synthetic::Rng;

/// The regularisation path cross-validation chooses from.
pub const CS: [f64; 7] = [1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4];
/// Shots per class of the few-shot curve.
pub const SHOTS: [usize; 5] = [1, 2, 4, 8, 16];

/// Embeddings as one row-major f64 matrix (normalised when built with [`Data::normalized`]).
#[derive(Clone, Debug)]
pub struct Data {
    pub n: usize,
    pub dim: usize,
    x: Vec<f64>,
}

impl Data {
    pub fn normalized(rows: &[Vec<f32>]) -> Data {
        let dim = rows.first().map_or(0, Vec::len);
        let mut x = Vec::with_capacity(rows.len() * dim);
        for r in rows {
            assert_eq!(r.len(), dim, "every embedding has the same width");
            x.extend(super::normalized(r).into_iter().map(f64::from));
        }
        Data { n: rows.len(), dim, x }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }
}

/// A fitted probe: `classes × (dim + 1)` weights, the intercept last in each row.
#[derive(Clone, Debug, PartialEq)]
pub struct Logistic {
    pub classes: usize,
    pub dim: usize,
    pub weights: Vec<f64>,
    /// L-BFGS iterations it took.
    pub iterations: usize,
}

impl Logistic {
    fn logits(&self, x: &[f64], out: &mut [f64]) {
        let w = self.dim + 1;
        for (k, o) in out.iter_mut().enumerate() {
            let row = &self.weights[k * w..(k + 1) * w];
            *o = row[self.dim] + row[..self.dim].iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        }
    }

    pub fn predict(&self, data: &Data, i: usize) -> usize {
        let mut z = vec![0.0; self.classes];
        self.logits(data.row(i), &mut z);
        z.iter().enumerate().fold(0, |b, (k, &v)| if v > z[b] { k } else { b })
    }

    /// Class probabilities of row `i`.
    pub fn probabilities(&self, data: &Data, i: usize) -> Vec<f64> {
        let mut z = vec![0.0; self.classes];
        self.logits(data.row(i), &mut z);
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    }

    pub fn accuracy(&self, data: &Data, y: &[usize], rows: &[usize]) -> f64 {
        if rows.is_empty() {
            return 0.0;
        }
        rows.iter().filter(|&&i| self.predict(data, i) == y[i]).count() as f64 / rows.len() as f64
    }
}

/// The objective (divided by the number of rows) and its gradient at `w`.
fn objective(data: &Data, y: &[usize], rows: &[usize], classes: usize, c: f64, w: &[f64], grad: &mut [f64]) -> f64 {
    let d = data.dim;
    let stride = d + 1;
    let n = rows.len() as f64;
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut z = vec![0.0; classes];
    let mut loss = 0.0;
    for &i in rows {
        let x = data.row(i);
        for (k, zk) in z.iter_mut().enumerate() {
            let row = &w[k * stride..(k + 1) * stride];
            *zk = row[d] + row[..d].iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        }
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        loss += m + s.ln() - z[y[i]];
        for k in 0..classes {
            let p = (z[k] - m).exp() / s - if k == y[i] { 1.0 } else { 0.0 };
            let g = &mut grad[k * stride..(k + 1) * stride];
            for (gj, xj) in g[..d].iter_mut().zip(x) {
                *gj += p * xj;
            }
            g[d] += p;
        }
    }
    let mut penalty = 0.0;
    for k in 0..classes {
        for j in 0..d {
            let v = w[k * stride + j];
            penalty += v * v;
            grad[k * stride + j] += v / c;
        }
    }
    grad.iter_mut().for_each(|g| *g /= n);
    (loss + 0.5 * penalty / c) / n
}

/// L-BFGS (memory 10) with a backtracking Armijo line search.
fn lbfgs(mut f: impl FnMut(&[f64], &mut [f64]) -> f64, mut x: Vec<f64>, max_iter: usize, gtol: f64) -> (Vec<f64>, usize) {
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut g_new = vec![0.0; n];
    let mut x_new = vec![0.0; n];
    for iter in 0..max_iter {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < gtol {
            return (x, iter);
        }
        // Two-loop recursion: d = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let a = dot(s, &q) / dot(y, s);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / dot(&g, &g).sqrt().max(1e-12),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y), a) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = dot(y, &q) / dot(y, s);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut dir: Vec<f64> = q.into_iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            dir = g.iter().map(|v| -v / dot(&g, &g).sqrt().max(1e-12)).collect();
            slope = dot(&g, &dir);
        }
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            x_new.iter_mut().zip(&x).zip(&dir).for_each(|((xn, xi), di)| *xn = xi + step * di);
            let f_new = f(&x_new, &mut g_new);
            if f_new <= fx + 1e-4 * step * slope {
                let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
                let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &y);
                if sy > 1e-12 * dot(&s, &s).sqrt() * dot(&y, &y).sqrt() {
                    if s_hist.len() == 10 {
                        s_hist.remove(0);
                        y_hist.remove(0);
                    }
                    s_hist.push(s);
                    y_hist.push(y);
                }
                let converged = (fx - f_new).abs() <= 1e-15 * fx.abs().max(1.0);
                std::mem::swap(&mut x, &mut x_new);
                std::mem::swap(&mut g, &mut g_new);
                fx = f_new;
                accepted = true;
                if converged {
                    return (x, iter + 1);
                }
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            return (x, iter);
        }
    }
    (x, max_iter)
}

/// Fits a probe on `rows` of `data`, starting from `warm` when given (the previous C of a path).
pub fn fit(data: &Data, y: &[usize], rows: &[usize], classes: usize, c: f64, warm: Option<&Logistic>) -> Logistic {
    let size = classes * (data.dim + 1);
    let start = warm.map_or_else(|| vec![0.0; size], |w| w.weights.clone());
    let (weights, iterations) = lbfgs(|w, g| objective(data, y, rows, classes, c, w, g), start, 2000, 1e-7);
    Logistic { classes, dim: data.dim, weights, iterations }
}

/// A seeded stratified split: `test_fraction` of each class (rounded, at least one when the class
/// has two or more rows, never all of it) to the test part.
pub fn stratified_split(y: &[usize], classes: usize, test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = Rng::new(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut members: Vec<usize> = (0..y.len()).filter(|&i| y[i] == c).collect();
        shuffle(&mut members, &mut rng);
        let n = members.len();
        let t = if n >= 2 { ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1) } else { 0 };
        test.extend_from_slice(&members[..t]);
        train.extend_from_slice(&members[t..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Stratified folds of `rows`: each class's rows shuffled and dealt round-robin.
fn folds_of(rows: &[usize], y: &[usize], classes: usize, folds: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); folds];
    let mut next = 0;
    for c in 0..classes {
        let mut members: Vec<usize> = rows.iter().copied().filter(|&i| y[i] == c).collect();
        shuffle(&mut members, rng);
        for i in members {
            out[next % folds].push(i);
            next += 1;
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CvPoint {
    pub c: f64,
    /// Mean validation accuracy over the folds.
    pub accuracy: f64,
}

/// Chooses C by `folds`-fold stratified cross-validation on `rows`. Calls `tick` after each fit.
pub fn choose_c(data: &Data, y: &[usize], rows: &[usize], classes: usize, folds: usize, seed: u64, tick: &mut dyn FnMut()) -> (f64, Vec<CvPoint>) {
    let mut rng = Rng::new(seed ^ 0xC5);
    let parts = folds_of(rows, y, classes, folds.max(2), &mut rng);
    let mut sums = vec![0.0; CS.len()];
    for held in 0..parts.len() {
        let train: Vec<usize> = parts.iter().enumerate().filter(|&(f, _)| f != held).flat_map(|(_, p)| p.iter().copied()).collect();
        let mut warm: Option<Logistic> = None;
        for (ci, &c) in CS.iter().enumerate() {
            let model = fit(data, y, &train, classes, c, warm.as_ref());
            sums[ci] += model.accuracy(data, y, &parts[held]);
            warm = Some(model);
            tick();
        }
    }
    let cv: Vec<CvPoint> = CS.iter().zip(&sums).map(|(&c, s)| CvPoint { c, accuracy: s / parts.len() as f64 }).collect();
    let best = cv.iter().fold(&cv[0], |b, p| if p.accuracy > b.accuracy + 1e-12 { p } else { b });
    (best.c, cv)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeOptions {
    pub test_fraction: f64,
    pub folds: usize,
    pub seed: u64,
    /// Seeds per point of the few-shot curve.
    pub seeds: usize,
    /// C is chosen on at most this many training images (a seeded stratified subsample; the
    /// probe is then fitted on all of them): cross-validation is 35 fits, and on a set of
    /// 10,000 it would hold the worker for minutes.
    pub cv_limit: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { test_fraction: 0.3, folds: 5, seed: 0, seeds: 5, cv_limit: 2000 }
    }
}

/// About `limit` of `rows`, each class in its share but at least `min_per_class` (or all it has),
/// seeded.
fn stratified_subsample(rows: &[usize], y: &[usize], classes: usize, limit: usize, min_per_class: usize, seed: u64) -> Vec<usize> {
    if rows.len() <= limit {
        return rows.to_vec();
    }
    let mut rng = Rng::new(seed ^ 0x5AB5);
    let mut out = Vec::with_capacity(limit);
    for class in 0..classes {
        let mut members: Vec<usize> = rows.iter().copied().filter(|&i| y[i] == class).collect();
        shuffle(&mut members, &mut rng);
        let take = (members.len() * limit / rows.len()).max(min_per_class).min(members.len());
        out.extend_from_slice(&members[..take]);
    }
    out.sort_unstable();
    out
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FewShot {
    /// Training images per class.
    pub shots: usize,
    /// Test accuracy over the seeds: mean and sample standard deviation.
    pub mean: f64,
    pub sd: f64,
    pub runs: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub c: f64,
    pub cv: Vec<CvPoint>,
    pub folds: usize,
    pub train_size: usize,
    /// Training images the cross-validation ran on (all of them up to `cv_limit`).
    #[serde(default)]
    pub cv_rows: usize,
    pub test_size: usize,
    /// On the test part.
    pub metrics: Metrics,
    /// Zero-shot accuracy on the same test part, when zero-shot predictions were given.
    pub zero_shot_accuracy: Option<f64>,
    /// Few-shot points whose shots every class's training part has.
    pub few_shot: Vec<FewShot>,
    /// Rows of the test part and their predictions.
    #[serde(skip)]
    pub test: Vec<usize>,
    #[serde(skip)]
    pub predicted: Vec<usize>,
}

/// Why a probe cannot run on a set.
pub fn check(y: &[usize], classes: usize) -> Result<(), String> {
    if classes < 2 {
        return Err("a linear probe needs at least two classes".into());
    }
    let small: Vec<usize> = (0..classes).filter(|&c| y.iter().filter(|&&v| v == c).count() < 2).collect();
    if !small.is_empty() {
        return Err(format!("a linear probe needs at least two images of every class ({} class(es) have fewer)", small.len()));
    }
    Ok(())
}

/// Fits the probe on the training part, C chosen by cross-validation there, and measures it on
/// the test part; then the few-shot curve. `progress(done, total)` counts fits.
#[allow(clippy::too_many_arguments)]
pub fn run(
    names: &[String],
    data: &Data,
    y: &[usize],
    train: &[usize],
    test: &[usize],
    options: &ProbeOptions,
    zero_shot: Option<&[usize]>,
    progress: &mut dyn FnMut(usize, usize),
) -> Probe {
    let classes = names.len();
    let count = |rows: &[usize], c: usize| rows.iter().filter(|&&i| y[i] == c).count();
    let min_train = (0..classes).map(|c| count(train, c)).min().unwrap_or(0);
    let folds = options.folds.min(min_train).max(2);
    let shots: Vec<usize> = SHOTS.iter().copied().filter(|&s| s <= min_train).collect();
    let shot_folds = |s: usize| options.folds.min(s);
    let total = folds * CS.len()
        + 1
        + shots.iter().map(|&s| options.seeds * (if s >= 2 { shot_folds(s) * CS.len() } else { 0 } + 1)).sum::<usize>();
    let mut done = 0;
    let mut tick = || {
        done += 1;
        progress(done, total);
    };
    let cv_rows = stratified_subsample(train, y, classes, options.cv_limit, folds, options.seed);
    let (c, cv) = choose_c(data, y, &cv_rows, classes, folds, options.seed, &mut tick);
    let model = fit(data, y, train, classes, c, None);
    tick();
    let predicted: Vec<usize> = test.iter().map(|&i| model.predict(data, i)).collect();
    let truth: Vec<usize> = test.iter().map(|&i| y[i]).collect();
    let metrics = Metrics::new(names, &truth, &predicted);
    let zero_shot_accuracy = zero_shot.map(|z| {
        if test.is_empty() { 0.0 } else { test.iter().filter(|&&i| z[i] == y[i]).count() as f64 / test.len() as f64 }
    });
    let mut few_shot = Vec::new();
    for &s in &shots {
        let mut accs = Vec::new();
        for seed in 0..options.seeds as u64 {
            let mut rng = Rng::new(options.seed.wrapping_mul(1_000_003) ^ (seed << 8) ^ s as u64);
            let mut rows = Vec::new();
            for class in 0..classes {
                let mut members: Vec<usize> = train.iter().copied().filter(|&i| y[i] == class).collect();
                shuffle(&mut members, &mut rng);
                rows.extend_from_slice(&members[..s]);
            }
            // One image per class leaves nothing to validate on: the C of the whole training part.
            let c_s = if s >= 2 { choose_c(data, y, &rows, classes, shot_folds(s), seed, &mut tick).0 } else { c };
            let m = fit(data, y, &rows, classes, c_s, None);
            tick();
            accs.push(m.accuracy(data, y, test));
        }
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        let sd = if accs.len() > 1 {
            (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (accs.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        few_shot.push(FewShot { shots: s, mean, sd, runs: accs.len() });
    }
    Probe {
        c,
        cv,
        folds,
        train_size: train.len(),
        cv_rows: cv_rows.len(),
        test_size: test.len(),
        metrics,
        zero_shot_accuracy,
        few_shot,
        test: test.to_vec(),
        predicted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n_per: usize, classes: usize, dim: usize, spread: f32, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let centres: Vec<Vec<f32>> = (0..classes).map(|_| (0..dim).map(|_| rng.normal()).collect()).collect();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (c, centre) in centres.iter().enumerate() {
            for _ in 0..n_per {
                x.push(centre.iter().map(|v| v + spread * rng.normal()).collect());
                y.push(c);
            }
        }
        (x, y)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = blobs(5, 3, 4, 1.0, 1);
        let data = Data::normalized(&x);
        let rows: Vec<usize> = (0..data.n).collect();
        let mut rng = Rng::new(2);
        let w: Vec<f64> = (0..3 * 5).map(|_| rng.normal() as f64).collect();
        let mut g = vec![0.0; w.len()];
        objective(&data, &y, &rows, 3, 0.7, &w, &mut g);
        let mut scratch = vec![0.0; w.len()];
        for j in 0..w.len() {
            let (mut a, mut b) = (w.clone(), w.clone());
            a[j] += 1e-6;
            b[j] -= 1e-6;
            let num = (objective(&data, &y, &rows, 3, 0.7, &a, &mut scratch) - objective(&data, &y, &rows, 3, 0.7, &b, &mut scratch)) / 2e-6;
            assert!((num - g[j]).abs() < 1e-6, "{j}: {num} vs {}", g[j]);
        }
    }

    #[test]
    fn cross_validation_runs_on_a_stratified_subsample_of_a_large_training_part() {
        // 3 classes of 90, 60 and 30 images; C is chosen on about 60 of the 180.
        let y: Vec<usize> = (0..180).map(|i| if i < 90 { 0 } else if i < 150 { 1 } else { 2 }).collect();
        let rows: Vec<usize> = (0..180).collect();
        let sub = stratified_subsample(&rows, &y, 3, 60, 5, 7);
        let per: Vec<usize> = (0..3).map(|c| sub.iter().filter(|&&i| y[i] == c).count()).collect();
        assert_eq!(per, vec![30, 20, 10]);
        assert_eq!(sub, stratified_subsample(&rows, &y, 3, 60, 5, 7), "seeded");
        // A rare class keeps enough for every fold; a small part is used whole.
        let rare = stratified_subsample(&rows, &y, 3, 12, 5, 7);
        assert_eq!((0..3).map(|c| rare.iter().filter(|&&i| y[i] == c).count()).collect::<Vec<_>>(), vec![6, 5, 5]);
        assert_eq!(stratified_subsample(&rows, &y, 3, 500, 5, 7), rows);
    }

    #[test]
    fn separable_blobs_are_learnt_and_the_split_is_stratified() {
        let (x, y) = blobs(20, 3, 8, 0.3, 3);
        let data = Data::normalized(&x);
        let (train, test) = stratified_split(&y, 3, 0.3, 7);
        assert_eq!(test.len(), 18);
        for c in 0..3 {
            assert_eq!(test.iter().filter(|&&i| y[i] == c).count(), 6);
        }
        assert_eq!(stratified_split(&y, 3, 0.3, 7), (train.clone(), test.clone()), "seeded");
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let mut calls = 0;
        let p = run(&names, &data, &y, &train, &test, &ProbeOptions::default(), None, &mut |_, _| calls += 1);
        assert_eq!(p.metrics.accuracy, 1.0);
        assert_eq!(p.few_shot.iter().map(|f| f.shots).collect::<Vec<_>>(), vec![1, 2, 4, 8]);
        assert!(calls > 0);
    }
}
