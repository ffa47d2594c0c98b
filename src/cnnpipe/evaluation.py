"""Metrics from predicted probabilities: pure NumPy/scikit-learn, no model or files needed."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

_EPS = 1e-7  # the clipping Keras applies inside its cross-entropy losses


def as_class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """(N, 1) sigmoid outputs -> (N, 2) probabilities; softmax outputs pass through."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


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
