//! Classification and retrieval metrics, with scikit-learn's definitions: a class's precision is
//! 0 when nothing was predicted as it (`zero_division=0`), balanced accuracy is the mean recall
//! over the classes present in the truth, macro F1 is the plain mean over the given classes and
//! weighted F1 weighs each by its support.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Images whose true label is this class.
    pub support: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Images evaluated.
    pub n: usize,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    /// In class order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[t][p]`: images of true class `t` predicted as `p`, in class order.
    pub confusion: Vec<Vec<usize>>,
}

impl Metrics {
    /// `truth[i]` and `predicted[i]` index into `classes`.
    pub fn new(classes: &[String], truth: &[usize], predicted: &[usize]) -> Metrics {
        assert_eq!(truth.len(), predicted.len(), "one prediction per image");
        let k = classes.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let n = truth.len();
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let per_class: Vec<ClassMetrics> = (0..k)
            .map(|c| {
                let tp = confusion[c][c] as f64;
                let support: usize = confusion[c].iter().sum();
                let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
                let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
                let recall = if support > 0 { tp / support as f64 } else { 0.0 };
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassMetrics { label: classes[c].clone(), precision, recall, f1, support }
            })
            .collect();
        let present: Vec<&ClassMetrics> = per_class.iter().filter(|c| c.support > 0).collect();
        let balanced_accuracy =
            if present.is_empty() { 0.0 } else { present.iter().map(|c| c.recall).sum::<f64>() / present.len() as f64 };
        let macro_f1 = if k > 0 { per_class.iter().map(|c| c.f1).sum::<f64>() / k as f64 } else { 0.0 };
        let weighted_f1 =
            if n > 0 { per_class.iter().map(|c| c.f1 * c.support as f64).sum::<f64>() / n as f64 } else { 0.0 };
        Metrics {
            n,
            accuracy: if n > 0 { correct as f64 / n as f64 } else { 0.0 },
            balanced_accuracy,
            macro_f1,
            weighted_f1,
            per_class,
            confusion,
        }
    }

    /// Each row of the confusion matrix divided by its sum (the class's recall on the diagonal);
    /// a class without images is a row of zeros.
    pub fn row_normalized(&self) -> Vec<Vec<f64>> {
        self.confusion
            .iter()
            .map(|row| {
                let s: usize = row.iter().sum();
                row.iter().map(|&v| if s > 0 { v as f64 / s as f64 } else { 0.0 }).collect()
            })
            .collect()
    }
}

/// Recall@K at K = 1, 5, 10 (`ks`), both ways between images and class prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retrieval {
    pub ks: Vec<usize>,
    /// For each class prompt as a query (classes with images only): whether an image of that
    /// class is among the K most similar images, averaged over the prompts.
    pub text_to_image: Vec<f64>,
    /// For each image as a query: whether its class's prompt is among the K most similar
    /// prompts (scikit-learn's `top_k_accuracy_score`), averaged over the images.
    pub image_to_text: Vec<f64>,
}

pub const RECALL_KS: [usize; 3] = [1, 5, 10];

/// `scores[i][c]`: similarity of image `i` to class `c`'s prompt.
#[allow(clippy::needless_range_loop)]
pub fn retrieval(scores: &[Vec<f32>], truth: &[usize], classes: usize) -> Retrieval {
    let ks = RECALL_KS.to_vec();
    let n = scores.len();
    // Image → text: the rank of the true class among the prompts (ties count against it).
    let ranks: Vec<usize> = scores
        .iter()
        .zip(truth)
        .map(|(s, &t)| s.iter().enumerate().filter(|&(c, &v)| c != t && v >= s[t]).count())
        .collect();
    let image_to_text =
        ks.iter().map(|&k| if n > 0 { ranks.iter().filter(|&&r| r < k).count() as f64 / n as f64 } else { 0.0 }).collect();
    // Text → image: the best rank among the images of the class.
    let mut best = Vec::new();
    for c in 0..classes {
        let members: Vec<usize> = (0..n).filter(|&i| truth[i] == c).collect();
        let Some(top) = members.iter().map(|&i| scores[i][c]).reduce(f32::max) else { continue };
        // Images of other classes scoring at least as high as the best image of this class.
        best.push((0..n).filter(|&i| truth[i] != c && scores[i][c] >= top).count());
    }
    let text_to_image = ks
        .iter()
        .map(|&k| if best.is_empty() { 0.0 } else { best.iter().filter(|&&r| r < k).count() as f64 / best.len() as f64 })
        .collect();
    Retrieval { ks, text_to_image, image_to_text }
}

/// The metrics as CSV: one row per class, then the averages.
pub fn csv(m: &Metrics) -> String {
    let mut out = String::from("class,precision,recall,f1,support\n");
    for c in &m.per_class {
        out.push_str(&format!("{},{:.6},{:.6},{:.6},{}\n", super::labels::csv_field(&c.label), c.precision, c.recall, c.f1, c.support));
    }
    out.push_str(&format!("accuracy,,,{:.6},{}\n", m.accuracy, m.n));
    out.push_str(&format!("balanced accuracy,,,{:.6},{}\n", m.balanced_accuracy, m.n));
    out.push_str(&format!("macro avg,,,{:.6},{}\n", m.macro_f1, m.n));
    out.push_str(&format!("weighted avg,,,{:.6},{}\n", m.weighted_f1, m.n));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_case_by_hand() {
        let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // a: 2 right, 1 as b; b: 1 right; c: 1 as a (never predicted right).
        let m = Metrics::new(&classes, &[0, 0, 0, 1, 2], &[0, 0, 1, 1, 0]);
        assert_eq!(m.confusion, vec![vec![2, 1, 0], vec![0, 1, 0], vec![1, 0, 0]]);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        assert!((m.per_class[0].precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.per_class[2].f1, 0.0);
        assert!((m.balanced_accuracy - (2.0 / 3.0 + 1.0 + 0.0) / 3.0).abs() < 1e-12);
        assert_eq!(m.row_normalized()[1], vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn recall_at_k_counts_ties_against() {
        // Two images, two classes; image 1 ties its prompt with the other.
        let scores = vec![vec![0.9, 0.1], vec![0.5, 0.5]];
        let r = retrieval(&scores, &[0, 1], 2);
        assert_eq!(r.image_to_text[0], 0.5);
        assert_eq!(r.image_to_text[1], 1.0);
        // Prompt 0's best image is image 0 (rank 0); prompt 1's best is image 1, tied with image 0? 0.1 < 0.5: rank 0.
        assert_eq!(r.text_to_image[0], 1.0);
    }
}
