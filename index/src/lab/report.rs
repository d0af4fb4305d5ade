//! One evaluation of a model on a labelled set, as the lab shows it and `weights-tool eval`
//! prints it: zero-shot metrics and retrieval, and optionally the linear probe.

use serde::{Deserialize, Serialize};

use super::metrics::{Metrics, Retrieval};
use super::probe::{self, Probe, ProbeOptions};
use super::zero_shot;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The model's name, as the caller knows it.
    pub model: String,
    pub templates: Vec<String>,
    /// The class order of every matrix and list.
    pub classes: Vec<String>,
    /// Zero-shot: accuracy, balanced accuracy, macro and weighted F1, per class, confusion.
    #[serde(flatten)]
    pub metrics: Metrics,
    pub retrieval: Retrieval,
    /// Each image's true and zero-shot predicted class, in input order.
    pub truth: Vec<usize>,
    pub predicted: Vec<usize>,
    /// The linear probe, when asked for and possible.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub probe: Option<Probe>,
    /// Why the probe asked for could not run (too few images of a class).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub probe_error: Option<String>,
}

/// Evaluates `images` (true classes `truth`, indices into `classes`) given each class's prompt
/// embeddings under every template (`prompts[class][template]`). `progress(done, total)` counts
/// the probe's fits.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &str,
    templates: &[String],
    classes: &[String],
    prompts: &[Vec<Vec<f32>>],
    images: &[Vec<f32>],
    truth: &[usize],
    probe_options: Option<&ProbeOptions>,
    progress: &mut dyn FnMut(usize, usize),
) -> Report {
    assert_eq!(classes.len(), prompts.len(), "prompt embeddings for every class");
    assert_eq!(images.len(), truth.len(), "a class for every image");
    let class_embeddings: Vec<Vec<f32>> = prompts.iter().map(|p| zero_shot::ensemble(p)).collect();
    let z = zero_shot::evaluate(classes, &class_embeddings, images, truth);
    let (probe, probe_error) = match probe_options {
        None => (None, None),
        Some(options) => match probe::check(truth, classes.len()) {
            Err(e) => (None, Some(e)),
            Ok(()) => {
                let data = probe::Data::normalized(images);
                let (train, test) = probe::stratified_split(truth, classes.len(), options.test_fraction, options.seed);
                (Some(probe::run(classes, &data, truth, &train, &test, options, Some(&z.predicted), progress)), None)
            }
        },
    };
    Report {
        model: model.to_string(),
        templates: templates.to_vec(),
        classes: classes.to_vec(),
        metrics: z.metrics,
        retrieval: z.retrieval,
        truth: truth.to_vec(),
        predicted: z.predicted,
        probe,
        probe_error,
    }
}
