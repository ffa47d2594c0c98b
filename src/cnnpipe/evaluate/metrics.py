"""Metrics from predicted probabilities: pure NumPy/scikit-learn, no model or files needed."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from cnnpipe.evaluate.chance import chance_test
from cnnpipe.inference.batches import as_class_probabilities

_EPS = 1e-7  # the clipping Keras applies inside its cross-entropy losses


def cross_entropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))


def classification_metrics(
    labels: np.ndarray, outputs: np.ndarray, class_names: list[str] | tuple[str, ...]
) -> dict:
    """Accuracy, loss, macro-F1 and per-class precision/recall/F1 for model outputs."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = as_class_probabilities(outputs)
    if probs.shape != (len(labels), len(class_names)):
        raise ValueError(
            f"outputs of shape {probs.shape} do not fit {len(labels)} labels "
            f"and {len(class_names)} classes"
        )
    predicted = probs.argmax(axis=1)
    class_ids = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=class_ids, zero_division=0
    )
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "loss": cross_entropy(labels, probs),
        "macro_f1": float(np.mean(f1)),
        "num_test_images": int(len(labels)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
    }


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(labels, predicted, labels=list(range(num_classes)))


def confusion_rows(labels, predicted, class_names) -> list[dict[str, str]]:
    """One row per test image, the shape DVC's ``confusion`` template expects."""
    names = np.asarray(class_names, dtype=object)
    return [
        {"actual": a, "predicted": p}
        for a, p in zip(names[np.asarray(labels)], names[np.asarray(predicted)], strict=True)
    ]


# --- extended metrics, calibration and ranking curves ---------------------------------------

CALIBRATION_BINS = 15  # Guo et al. (2017): equal-width bins, the usual ECE setting
CURVE_POINTS = 200  # ROC/PR tables are committed; a few hundred points draw a smooth curve


def _checked(labels, outputs, num_classes: int | None = None):
    labels = np.asarray(labels, dtype=np.int64)
    probs = as_class_probabilities(outputs)
    if probs.ndim != 2 or len(probs) != len(labels) or (
        num_classes is not None and probs.shape[1] != num_classes
    ):
        classes = "" if num_classes is None else f" and {num_classes} classes"
        raise ValueError(
            f"outputs of shape {probs.shape} do not fit {len(labels)} labels{classes}"
        )
    return labels, probs


def _calibration_bins(probs: np.ndarray, bins: int) -> np.ndarray:
    # Bins are right-closed, ((m-1)/M, m/M], as in Guo et al.; 0 joins the first bin.
    confidence = probs.max(axis=1)
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def _bin_statistics(labels, probs, bins: int):
    """Per-bin counts, summed confidences and summed hits (correct predictions)."""
    index = _calibration_bins(probs, bins)
    hits = (probs.argmax(axis=1) == labels).astype(np.float64)
    counts = np.bincount(index, minlength=bins)
    confidence = np.bincount(index, weights=probs.max(axis=1), minlength=bins)
    correct = np.bincount(index, weights=hits, minlength=bins)
    return counts, confidence, correct


def expected_calibration_error(labels, outputs, bins: int = CALIBRATION_BINS) -> float:
    """Count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    labels, probs = _checked(labels, outputs)
    if len(labels) == 0:
        raise ValueError("expected_calibration_error needs at least one prediction")
    counts, confidence, correct = _bin_statistics(labels, probs, bins)
    # Per-bin |sum(conf) - sum(hits)| / N equals (n_b / N) * |mean conf - accuracy|.
    return float(np.abs(confidence - correct).sum() / len(labels))


def top_k_accuracy(labels, outputs, k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable ones.

    A class tied with the true one does not push it out, so ties count in the model's favour
    (the same convention as ``sklearn.metrics.top_k_accuracy_score``).
    """
    labels, probs = _checked(labels, outputs)
    true_score = probs[np.arange(len(labels)), labels]
    rank = (probs > true_score[:, None]).sum(axis=1)
    return float(np.mean(rank < k))


def _positive_scores(labels, probs):
    """Binary tasks: class-1 probability; more classes: one-vs-rest, micro-averaged."""
    if probs.shape[1] == 2:
        return (labels == 1).astype(np.int64), probs[:, 1]
    onehot = np.zeros(probs.shape, dtype=np.int64)
    onehot[np.arange(len(labels)), labels] = 1
    return onehot.ravel(), probs.ravel()


def _curve_inputs(labels, outputs):
    labels, probs = _checked(labels, outputs)
    truth, scores = _positive_scores(labels, probs)
    if truth.min(initial=1) == truth.max(initial=0):
        # sklearn would warn and return NaN rates, which a committed table must not hold.
        raise ValueError("ROC and precision-recall curves need both positives and negatives")
    return truth, scores


def extended_metrics(labels, outputs, class_names) -> dict:
    """:func:`classification_metrics` plus weighted F1, balanced accuracy, calibration error,
    top-3 accuracy (more than 3 classes), ROC-AUC / average precision (binary tasks) and the
    test against the majority class (:func:`cnnpipe.evaluate.chance.chance_test`).

    Balanced accuracy averages recall over the classes present in ``labels``. ROC-AUC and
    average precision are left out when ``labels`` hold one class only: both are undefined
    then, and JSON has no NaN.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    metrics = classification_metrics(labels, outputs, class_names)
    labels, probs = _checked(labels, outputs, len(class_names))
    predicted = probs.argmax(axis=1)
    class_ids = list(range(len(class_names)))
    metrics["weighted_f1"] = float(
        f1_score(labels, predicted, labels=class_ids, average="weighted", zero_division=0)
    )
    support = np.bincount(labels, minlength=len(class_names))
    hits = np.bincount(
        labels, weights=(predicted == labels).astype(np.float64), minlength=len(class_names)
    )
    present = support > 0
    metrics["balanced_accuracy"] = float(np.mean(hits[present] / support[present]))
    metrics["ece"] = expected_calibration_error(labels, probs)
    metrics.update(chance_test(labels, predicted))
    if len(class_names) > 3:
        metrics["top3_accuracy"] = top_k_accuracy(labels, probs, 3)
    if len(class_names) == 2 and present.all():
        truth, scores = _positive_scores(labels, probs)
        metrics["roc_auc"] = float(roc_auc_score(truth, scores))
        metrics["average_precision"] = float(average_precision_score(truth, scores))
    return metrics


def reliability_table(labels, outputs, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Rows ``bin_center, confidence, accuracy, count`` for a reliability diagram.

    Only non-empty bins appear: an empty one has no accuracy, and a NaN would break the
    DVC plot. Plotting ``accuracy`` and ``confidence`` against ``bin_center`` shows the
    calibration gap as the distance between the two lines.
    """
    labels, probs = _checked(labels, outputs)
    counts, confidence, correct = _bin_statistics(labels, probs, bins)
    return [
        {
            "bin_center": round((b + 0.5) / bins, 6),
            "confidence": round(float(confidence[b] / counts[b]), 6),
            "accuracy": round(float(correct[b] / counts[b]), 6),
            "count": int(counts[b]),
        }
        for b in np.flatnonzero(counts)
    ]


def _thin(length: int, max_points: int) -> np.ndarray:
    """Evenly spaced indices into a curve, always keeping its two end points."""
    if length <= max_points:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, max(2, max_points)).round().astype(np.int64))


def roc_rows(labels, outputs, max_points: int = CURVE_POINTS) -> list[dict]:
    """ROC curve rows ``fpr, tpr``, at most ``max_points`` of them.

    Binary tasks use the class-1 probability; with more classes the curve is the
    micro-averaged one-vs-rest curve, so the table exists for every dataset.
    """
    from sklearn.metrics import roc_curve

    truth, scores = _curve_inputs(labels, outputs)
    fpr, tpr, _ = roc_curve(truth, scores)
    keep = _thin(len(fpr), max_points)
    return [
        {"fpr": round(float(f), 6), "tpr": round(float(t), 6)}
        for f, t in zip(fpr[keep], tpr[keep], strict=True)
    ]


def precision_recall_rows(labels, outputs, max_points: int = CURVE_POINTS) -> list[dict]:
    """Precision-recall curve rows ``recall, precision``, at most ``max_points`` of them.

    Same positive class (or micro-average) as :func:`roc_rows`.
    """
    from sklearn.metrics import precision_recall_curve

    truth, scores = _curve_inputs(labels, outputs)
    precision, recall, _ = precision_recall_curve(truth, scores)
    keep = _thin(len(recall), max_points)
    return [
        {"recall": round(float(r), 6), "precision": round(float(p), 6)}
        for r, p in zip(recall[keep], precision[keep], strict=True)
    ]
