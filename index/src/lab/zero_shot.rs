//! Zero-shot classification as CLIP and PLIP evaluate it: each class is put into every prompt
//! template, the normalised text embeddings of a class are averaged over the templates and
//! renormalised (a prompt ensemble), and an image is predicted as the class of highest cosine.

use super::normalized;
use super::metrics::{Metrics, Retrieval, retrieval};
use serde::{Deserialize, Serialize};

/// The prompts for `class` under each template (`{}` stands for the class; a template without
/// it is used as a prefix).
/// Underscores in a class name (folder names such as `smooth_muscle`) read as spaces.
pub fn prompts(class: &str, templates: &[String]) -> Vec<String> {
    let class = class.replace('_', " ");
    let class = class.as_str();
    if templates.is_empty() {
        return vec![class.to_string()];
    }
    templates
        .iter()
        .map(|t| if t.contains("{}") { t.replacen("{}", class, 1) } else { format!("{} {class}", t.trim_end()) })
        .collect()
}

/// One class embedding from its prompts' text embeddings: the mean of the normalised
/// embeddings, renormalised.
pub fn ensemble(prompt_embeddings: &[Vec<f32>]) -> Vec<f32> {
    let dim = prompt_embeddings.first().map_or(0, Vec::len);
    let mut mean = vec![0f32; dim];
    for e in prompt_embeddings {
        for (m, v) in mean.iter_mut().zip(normalized(e)) {
            *m += v;
        }
    }
    normalized(&mean)
}

/// `scores[i][c]`: cosine of image `i` and class `c`.
pub fn scores(images: &[Vec<f32>], classes: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let classes: Vec<Vec<f32>> = classes.iter().map(|c| normalized(c)).collect();
    images
        .iter()
        .map(|img| {
            let img = normalized(img);
            classes.iter().map(|c| crate::kernel::dot(&img, c)).collect()
        })
        .collect()
}

/// The index of the largest score (the first of equals).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZeroShot {
    pub metrics: Metrics,
    pub retrieval: Retrieval,
    /// Predicted class of each image, in input order.
    pub predicted: Vec<usize>,
}

/// Zero-shot evaluation of `images` (true classes `truth`) against class embeddings
/// (already ensembled, in the order of `names`).
pub fn evaluate(names: &[String], class_embeddings: &[Vec<f32>], images: &[Vec<f32>], truth: &[usize]) -> ZeroShot {
    let s = scores(images, class_embeddings);
    let predicted: Vec<usize> = s.iter().map(|r| argmax(r)).collect();
    ZeroShot { metrics: Metrics::new(names, truth, &predicted), retrieval: retrieval(&s, truth, names.len()), predicted }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensemble_is_the_renormalised_mean_of_normalised_prompts() {
        let e = ensemble(&[vec![2.0, 0.0], vec![0.0, 0.5]]);
        let r = std::f32::consts::FRAC_1_SQRT_2;
        assert!((e[0] - r).abs() < 1e-6 && (e[1] - r).abs() < 1e-6);
        assert_eq!(prompts("mucus", &["an H&E image of {}.".into(), "histology:".into()]), vec!["an H&E image of mucus.", "histology: mucus"]);
        assert_eq!(argmax(&[0.1, 0.3, 0.3]), 1);
        assert_eq!(prompts("smooth_muscle", &["a photo of {}.".into()]), vec!["a photo of smooth muscle."]);
    }
}
