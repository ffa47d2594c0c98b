import numpy as np
import pytest

from cnnpipe.evaluate.metrics import (
    as_class_probabilities,
    classification_metrics,
    confusion_counts,
    confusion_rows,
)


def test_metrics_on_a_known_table():
    labels = np.array([0, 0, 1, 1, 2, 2])
    outputs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    metrics = classification_metrics(labels, outputs, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["b"]["recall"] == pytest.approx(1.0)
    assert metrics["per_class"]["a"]["f1"] == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    expected_loss = -np.mean(np.log(outputs[np.arange(6), labels]))
    assert metrics["loss"] == pytest.approx(expected_loss)


def test_binary_sigmoid_outputs_become_two_columns():
    probs = as_class_probabilities(np.array([[0.9], [0.2]]))
    np.testing.assert_allclose(probs, [[0.1, 0.9], [0.8, 0.2]])
    metrics = classification_metrics(np.array([1, 1]), np.array([[0.9], [0.2]]), ["cat", "dog"])
    assert metrics["accuracy"] == 0.5


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="do not fit"):
        classification_metrics(np.array([0, 1]), np.ones((2, 3)) / 3, ["a", "b"])


def test_confusion_outputs_agree():
    labels, predicted = np.array([0, 1, 1]), np.array([0, 0, 1])
    assert confusion_counts(labels, predicted, 2).tolist() == [[1, 0], [1, 1]]
    assert confusion_rows(labels, predicted, ["x", "y"])[1] == {"actual": "y", "predicted": "x"}
