//! `weights-tool eval` on the bundled demo model and its sample tiles, laid out the two ways a
//! teacher has them: images with a file,label CSV, and class folders. Ten labels are wrong on
//! purpose, one image is corrupt and one has no label, so the numbers are not all 1.0 and every
//! path of the labelling is exercised. The metrics are recomputed here from the per-image
//! results, independently of `index::lab`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Sample {
    file: String,
    class: String,
}

fn samples() -> Vec<Sample> {
    let text = std::fs::read_to_string(root().join("public/samples/manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| Sample { file: e["file"].as_str().unwrap().to_string(), class: e["class"].as_str().unwrap().to_string() })
        .collect()
}

/// The labels as given: the manifest's, except every 20th image gets the next class's name.
fn given_labels(samples: &[Sample]) -> (Vec<String>, Vec<bool>) {
    let mut classes: Vec<&str> = samples.iter().map(|s| s.class.as_str()).collect();
    classes.sort();
    classes.dedup();
    let mut wrong = vec![false; samples.len()];
    let labels = samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i % 20 == 7 {
                wrong[i] = true;
                let c = classes.iter().position(|&c| c == s.class).unwrap();
                classes[(c + 1) % classes.len()].to_string()
            } else {
                s.class.clone()
            }
        })
        .collect();
    (labels, wrong)
}

fn fresh(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weights-tool-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(labelled: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weights-tool"))
        .args(["eval", "--backend", "cpu", "--probe", "--model"])
        .arg(root().join("public/models/demo"))
        .arg("--labelled")
        .arg(labelled)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("JSON on stdout ({e}); stderr: {stderr}"));
    (output.status.code(), json, stderr)
}

/// `eval` without a probe on a set it must refuse: its exit status and stderr.
fn run_failing(labelled: &Path) -> (std::process::Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weights-tool"))
        .args(["eval", "--backend", "cpu", "--model"])
        .arg(root().join("public/models/demo"))
        .arg("--labelled")
        .arg(labelled)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap()
}

/// Accuracy, balanced accuracy, macro and weighted F1 and the confusion matrix, from the
/// per-image (label, predicted) pairs, in `classes` order.
#[allow(clippy::needless_range_loop)]
fn recompute(json: &serde_json::Value) -> (f64, f64, f64, f64, Vec<Vec<u64>>) {
    let classes: Vec<&str> = json["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let k = classes.len();
    let at = |s: &serde_json::Value| classes.iter().position(|&c| c == s.as_str().unwrap()).unwrap();
    let mut confusion = vec![vec![0u64; k]; k];
    for im in json["images"].as_array().unwrap() {
        confusion[at(&im["label"])][at(&im["predicted"])] += 1;
    }
    let n: u64 = confusion.iter().flatten().sum();
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let (mut recall_sum, mut f1_sum, mut weighted) = (0.0, 0.0, 0.0);
    for i in 0..k {
        let support: u64 = confusion[i].iter().sum();
        let predicted: u64 = (0..k).map(|r| confusion[r][i]).sum();
        let tp = confusion[i][i] as f64;
        let p = if predicted == 0 { 0.0 } else { tp / predicted as f64 };
        let r = if support == 0 { 0.0 } else { tp / support as f64 };
        let f1 = if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) };
        recall_sum += r;
        f1_sum += f1;
        weighted += f1 * support as f64;
    }
    (correct as f64 / n as f64, recall_sum / k as f64, f1_sum / k as f64, weighted / n as f64, confusion)
}

#[test]
fn eval_from_a_csv_and_from_class_folders_agree_and_match_a_recount() {
    let samples = samples();
    let (labels, wrong) = given_labels(&samples);
    let src = root().join("public/samples");

    // 1. Flat images + labels.csv (quoted fields, as spreadsheets write them).
    let flat = fresh("csv");
    let mut csv = String::from("file,label\n");
    for (s, l) in samples.iter().zip(&labels) {
        std::fs::copy(src.join(&s.file), flat.join(&s.file)).unwrap();
        csv.push_str(&format!("{},\"{}\"\n", s.file, l));
    }
    std::fs::write(flat.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    csv.push_str("broken.jpg,mucus\n");
    std::fs::copy(src.join(&samples[0].file), flat.join("unlisted.jpg")).unwrap();
    std::fs::write(flat.join("labels.csv"), csv).unwrap();
    let per_class_csv = flat.join("per-class.csv");

    // 2. The same labels as class folders (the corrupt image in one of them).
    let tree = fresh("folders");
    for (s, l) in samples.iter().zip(&labels) {
        std::fs::create_dir_all(tree.join(l)).unwrap();
        std::fs::copy(src.join(&s.file), tree.join(l).join(&s.file)).unwrap();
    }
    std::fs::write(tree.join("mucus/broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();

    let (code_a, a, err_a) = run(&flat, &["--csv", per_class_csv.to_str().unwrap()]);
    let (code_b, b, err_b) = run(&tree, &[]);
    for (code, json, err) in [(code_a, &a, &err_a), (code_b, &b, &err_b)] {
        assert_eq!(code, Some(2), "a skipped image makes the exit code 2; stderr: {err}");
        let skipped = json["skipped"].as_array().unwrap();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0]["path"].as_str().unwrap().ends_with("broken.jpg"), "{skipped:?}");
        assert!(err.contains("broken.jpg"), "stderr names the skipped image: {err}");
        assert_eq!(json["n"], samples.len(), "every labelled, readable image is evaluated");
        assert_eq!(json["backend"], "cpu");
        assert_eq!(json["classes"].as_array().unwrap().len(), 9);
    }
    assert_eq!(a["unlabelled"], serde_json::json!(["unlisted.jpg"]), "an image the CSV does not list is reported, not guessed");
    assert_eq!(b["unlabelled"], serde_json::json!([]));

    // The zero-shot numbers do not depend on how the labels were given.
    for key in ["classes", "templates", "accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "per_class", "confusion", "retrieval"] {
        assert_eq!(a[key], b[key], "{key} differs between the CSV and the class folders");
    }

    // Recount from the per-image results: the reported metrics are those of the images listed.
    let (acc, bal, macro_f1, weighted_f1, confusion) = recompute(&a);
    let tol = 1e-9;
    assert!((f(&a["accuracy"]) - acc).abs() < tol, "{} vs {acc}", a["accuracy"]);
    assert!((f(&a["balanced_accuracy"]) - bal).abs() < tol);
    assert!((f(&a["macro_f1"]) - macro_f1).abs() < tol);
    assert!((f(&a["weighted_f1"]) - weighted_f1).abs() < tol);
    assert_eq!(a["confusion"], serde_json::json!(confusion), "confusion rows are true classes, columns predicted, in `classes` order");

    // The demo model knows its tiles: it is right on the true classes, so each wrong label is
    // exactly one miss and the accuracy is what the labels allow.
    let by_path: BTreeMap<&str, (&str, &str)> = a["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| (im["path"].as_str().unwrap(), (im["label"].as_str().unwrap(), im["predicted"].as_str().unwrap())))
        .collect();
    let mut misses_on_wrong = 0;
    for ((s, l), &w) in samples.iter().zip(&labels).zip(&wrong) {
        let (label, predicted) = by_path[s.file.as_str()];
        assert_eq!(label, l, "the CSV's label for {}", s.file);
        if w {
            misses_on_wrong += usize::from(predicted != label);
        }
    }
    let n_wrong = wrong.iter().filter(|&&w| w).count();
    assert_eq!(n_wrong, 10);
    assert_eq!(misses_on_wrong, n_wrong, "a wrong label is never predicted");
    assert!(acc >= 0.85 && acc <= 1.0 - n_wrong as f64 / samples.len() as f64 + tol, "accuracy {acc}");

    // The probe: a stratified split of the same images, C chosen on the training part.
    let probe = &a["probe"];
    assert!(probe.is_object(), "--probe gives a probe: {a}");
    assert_eq!(probe["train_size"].as_u64().unwrap() + probe["test_size"].as_u64().unwrap(), samples.len() as u64);
    assert!(probe["cv"].as_array().unwrap().iter().any(|c| c["c"] == probe["c"]), "C is one of the grid's");
    let probe_acc = f(&probe["metrics"]["accuracy"]);
    assert!((0.5..=1.0).contains(&probe_acc), "probe accuracy {probe_acc}");
    let few = probe["few_shot"].as_array().unwrap();
    assert_eq!(few.iter().map(|p| p["shots"].as_u64().unwrap()).collect::<Vec<_>>()[..3], [1, 2, 4]);
    for p in few {
        assert_eq!(p["runs"], 5);
        assert!(f(&p["sd"]) >= 0.0 && (0.0..=1.0).contains(&f(&p["mean"])));
    }

    // The per-class CSV: a header, one row per class, then the four summary rows.
    let table = std::fs::read_to_string(&per_class_csv).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows[0], "class,precision,recall,f1,support");
    assert_eq!(rows.len(), 1 + 9 + 4, "{table}");
    assert!(rows[10].starts_with(&format!("accuracy,,,{acc:.6},")), "{table}");

    let _ = std::fs::remove_dir_all(&flat);
    let _ = std::fs::remove_dir_all(&tree);
}

#[test]
fn templates_are_ensembled_and_errors_are_specific() {
    let samples = samples();
    let src = root().join("public/samples");
    let tree = fresh("templates");
    for s in samples.iter().take(60) {
        std::fs::create_dir_all(tree.join(&s.class)).unwrap();
        std::fs::copy(src.join(&s.file), tree.join(&s.class).join(&s.file)).unwrap();
    }
    let (code, json, err) = run(&tree, &["--template", "an H&E image of {}.", "--template", "a histopathology tile showing {}."]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json["templates"], serde_json::json!(["an H&E image of {}.", "a histopathology tile showing {}."]));
    assert_eq!(json["n"], 60);

    // One class only: a specific error, no JSON.
    let one = fresh("one-class");
    std::fs::create_dir_all(one.join("mucus")).unwrap();
    std::fs::copy(src.join(&samples[0].file), one.join("mucus/a.jpg")).unwrap();
    let (output, stderr) = run_failing(&one);
    assert_ne!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty(), "no JSON for a refused set");
    assert!(stderr.contains("at least two classes") && stderr.contains("\"mucus\""), "{stderr}");

    // No labels at all: says how to give them.
    let flat = fresh("no-labels");
    std::fs::copy(src.join(&samples[0].file), flat.join("a.jpg")).unwrap();
    let (output, stderr) = run_failing(&flat);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("no labelled images") && stderr.contains("CSV"), "{stderr}");
    for d in [tree, one, flat] {
        let _ = std::fs::remove_dir_all(d);
    }
}
