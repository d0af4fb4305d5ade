#!/usr/bin/env python3
"""Reference numbers for the teaching lab (index::lab), computed by scikit-learn on a fixed set of
embeddings and labels.

Not run by CI. Reproduce with:

    python3 -m venv /tmp/sk && /tmp/sk/bin/pip install numpy scikit-learn umap-learn
    /tmp/sk/bin/python tests/lab/generate.py

Writes tests/lab/fixture.json:
  images, labels, classes   N embeddings (float32, not normalised), their class indices and names
  prompts                   K x T prompt embeddings (T templates per class)
  zero_shot                 the ensemble's predictions and, from sklearn.metrics, accuracy,
                            balanced accuracy, per-class precision/recall/F1/support, macro and
                            weighted F1, the confusion matrix, top-k accuracy (image -> text)
  damaged                   the same for predictions that never name one class and always name
                            another (zero_division = 0 paths)
  split                     a stratified train/test split (sklearn's train_test_split)
  probe                     LogisticRegression at fixed C on the normalised embeddings: test
                            accuracy and predictions; LogisticRegressionCV over the same Cs
  pca                       PCA(2) on the normalised embeddings: components, explained variance
  trust                     sklearn.manifold.trustworthiness (k = 10) of two fixed layouts
  manifold                  a second set whose classes vary along a few latent factors (stain,
                            scale, ...), as images of one tissue do, with the trustworthiness
                            umap-learn's layouts reach on both sets (three seeds each)
"""

import json
from pathlib import Path

import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.manifold import trustworthiness
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, top_k_accuracy_score)
from sklearn.model_selection import StratifiedKFold, train_test_split
import umap

HERE = Path(__file__).resolve().parent
SEED = 20261204
CLASSES = ["adipose", "debris", "lymphocytes", "mucus", "muscle", "tumour"]
SIZES = [40, 55, 70, 35, 60, 50]
DIM = 48
TEMPLATES = 3
CS = [1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4]


def normalised(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def metrics(truth, pred, k):
    labels = list(range(k))
    p, r, f, s = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    return {
        "predicted": [int(v) for v in pred],
        "accuracy": accuracy_score(truth, pred),
        "balanced_accuracy": balanced_accuracy_score(truth, pred),
        "macro_f1": f1_score(truth, pred, labels=labels, average="macro", zero_division=0),
        "weighted_f1": f1_score(truth, pred, labels=labels, average="weighted", zero_division=0),
        "precision": p.tolist(),
        "recall": r.tolist(),
        "f1": f.tolist(),
        "support": [int(v) for v in s],
        "confusion": confusion_matrix(truth, pred, labels=labels).tolist(),
    }


def trust_checked(x32, layout, k=10):
    """sklearn's trustworthiness, asserted to be the same with float32 distances (the Rust side
    computes in float32: a near-tie that reorders ranks would make a 1e-6 tolerance meaningless)."""
    layout = layout.astype(np.float32)
    t64 = trustworthiness(x32.astype(np.float64), layout.astype(np.float64), n_neighbors=k)
    t32 = trustworthiness(x32, layout, n_neighbors=k)
    assert abs(t64 - t32) < 1e-9, (t64, t32)
    return t64


def main():
    rng = np.random.default_rng(SEED)
    k = len(CLASSES)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(SIZES)])
    # Overlapping clusters on a shared offset, as CLIP embeddings are (one cone, not the sphere).
    centres = normalised(rng.normal(size=(k, DIM)))
    shared = normalised(rng.normal(size=(1, DIM)))[0]
    x = (shared + centres[y] * 0.6 + rng.normal(scale=0.2, size=(len(y), DIM))).astype(np.float32)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    xn = normalised(x.astype(np.float64))

    # Prompts: each class's centre, blurred per template, on the text side's own offset.
    text_shared = normalised(rng.normal(size=(1, DIM)))[0] * 0.5
    prompts = (text_shared + centres[:, None, :] * 0.7 + rng.normal(scale=0.12, size=(k, TEMPLATES, DIM))).astype(np.float32)
    ensemble = normalised(normalised(prompts.reshape(-1, DIM).astype(np.float64)).reshape(k, TEMPLATES, DIM).mean(axis=1))
    scores = xn @ ensemble.T
    # A near-tie would make the float32 argmax ambiguous: such images are left out of the set.
    top2 = np.sort(scores, axis=1)[:, -2:]
    keep = (top2[:, 1] - top2[:, 0]) > 1e-4
    x, y, xn, scores = x[keep], y[keep], xn[keep], scores[keep]
    print(f"{len(y)} images ({(~keep).sum()} near-ties left out)")
    pred = scores.argmax(axis=1)
    zero_shot = metrics(y, pred, k)
    zero_shot["image_to_text"] = {str(t): top_k_accuracy_score(y, scores, k=t, labels=list(range(k))) for t in (1, 5)}
    print(f"zero-shot accuracy {zero_shot['accuracy']:.3f}, weighted F1 {zero_shot['weighted_f1']:.3f}")

    damaged = pred.copy()
    damaged[damaged == 3] = 5  # class 3 never predicted: its precision is 0/0
    damaged[:25] = 1
    damaged_metrics = metrics(y, damaged, k)

    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    train, test = np.sort(train), np.sort(test)
    probe = {"fixed": []}
    for c in (0.1, 1.0, 10.0, 100.0):
        lr = LogisticRegression(C=c, max_iter=10000, tol=1e-10).fit(xn[train], y[train])
        p = lr.predict(xn[test])
        probe["fixed"].append({"c": c, "accuracy": accuracy_score(y[test], p), "predicted": p.tolist()})
        print(f"probe C={c}: {probe['fixed'][-1]['accuracy']:.4f}")
    cv = LogisticRegressionCV(Cs=CS, l1_ratios=(0.0,), use_legacy_attributes=False, scoring="accuracy", cv=StratifiedKFold(5, shuffle=True, random_state=0), max_iter=10000, tol=1e-8).fit(xn[train], y[train])
    probe["cv"] = {"c": float(np.ravel(cv.C_)[0]), "accuracy": accuracy_score(y[test], cv.predict(xn[test]))}
    print(f"probe CV: C={probe['cv']['c']}, {probe['cv']['accuracy']:.4f}")

    xn32 = xn.astype(np.float32)
    pca = PCA(n_components=2, svd_solver="full").fit(xn)
    projected = pca.transform(xn)
    random_layout = xn @ rng.normal(size=(DIM, 2))
    trust = {
        "pca": trust_checked(xn32, projected),
        "random": trust_checked(xn32, random_layout),
        "random_layout": [[float(str(v)) for v in row] for row in random_layout.astype(np.float32)],
    }
    print(f"trustworthiness: PCA {trust['pca']:.4f}, random projection {trust['random']:.4f}")

    def umap_trust(data):
        return [trustworthiness(data, umap.UMAP(n_neighbors=15, random_state=s).fit_transform(data), n_neighbors=10) for s in range(3)]

    # Each class: a 3-D latent factor through a smooth random map, plus a little isotropic noise.
    mk, md, per = 5, 32, 80
    m_centres = normalised(rng.normal(size=(mk, md)))
    m_shared = normalised(rng.normal(size=(1, md)))[0]
    parts, m_labels = [], []
    for c in range(mk):
        z = rng.normal(size=(per, 3))
        w = rng.normal(size=(3, md)) * 0.8
        parts.append(m_shared + m_centres[c] * 0.6 + np.tanh(z @ w) * 0.25 + rng.normal(scale=0.02, size=(per, md)))
        m_labels += [c] * per
    m_x = normalised(np.concatenate(parts)).astype(np.float32)
    manifold = {"images": [[float(str(v)) for v in row] for row in m_x], "labels": m_labels}
    trust["umap_learn"] = umap_trust(xn32)
    manifold["umap_learn"] = umap_trust(m_x)
    print(f"umap-learn trustworthiness: {trust['umap_learn']} (first set), {manifold['umap_learn']} (manifold set)")

    fixture = {
        "sklearn": sklearn.__version__,
        "classes": CLASSES,
        "labels": y.tolist(),
        "images": [[float(str(v)) for v in row] for row in x],
        "prompts": [[[float(str(v)) for v in t] for t in c] for c in prompts],
        "zero_shot": zero_shot,
        "damaged": damaged_metrics,
        "split": {"train": train.tolist(), "test": test.tolist()},
        "probe": probe,
        "pca": {
            "components": pca.components_.tolist(),
            "explained_variance": pca.explained_variance_.tolist(),
            "explained_ratio": pca.explained_variance_ratio_.tolist(),
        },
        "trust": trust,
        "manifold": manifold,
    }
    (HERE / "fixture.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
