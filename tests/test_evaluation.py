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


def test_headline_split_keeps_five_numbers_and_moves_the_rest_to_detail():
    from cnnpipe.evaluate.metrics import extended_metrics
    from cnnpipe.evaluate.outputs import HEADLINE_METRICS, split_headline

    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    outputs = np.eye(4)[[0, 1, 2, 0, 0, 1, 3, 3]] * 0.7 + 0.3 / 4
    metrics = {**extended_metrics(labels, outputs, list("abcd")), "total_params": 123}
    headline, detail = split_headline(metrics)
    assert tuple(headline) == HEADLINE_METRICS
    assert headline["accuracy"] == pytest.approx(6 / 8) and headline["total_params"] == 123
    assert {"per_class", "balanced_accuracy", "top3_accuracy", "weighted_f1"} <= detail.keys()
    assert not headline.keys() & detail.keys()


def test_predictions_file_is_compact_deterministic_and_reads_back(tmp_path):
    from cnnpipe.evaluate.outputs import read_predictions, write_predictions

    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 10, 10_000), rng.integers(0, 10, 10_000)
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    write_predictions(first, labels, predicted)
    write_predictions(second, labels, predicted)
    assert first.read_bytes() == second.read_bytes()  # same predictions, same bytes in git
    assert first.stat().st_size < 20_200  # one byte per label and prediction, plus a header
    back_labels, back_predicted = read_predictions(first)
    np.testing.assert_array_equal(back_labels, labels)
    np.testing.assert_array_equal(back_predicted, predicted)


def test_unreadable_predictions_are_one_clear_error(tmp_path):
    from cnnpipe.core.errors import DataError
    from cnnpipe.evaluate.outputs import read_predictions

    broken = tmp_path / "p.npy"
    broken.write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read predictions"):
        read_predictions(broken)


def test_mirrored_batches_flip_each_image_left_to_right_and_keep_the_labels(tmp_path):
    """Real, asymmetric images (digits): the mirror is np.fliplr of each, labels untouched."""
    from sklearn.datasets import load_digits

    from cnnpipe.core.shards import write_arrays
    from cnnpipe.inference import mirrored

    digits = load_digits()
    images = np.round(digits.images[:20] * 255 / 16).astype(np.uint8)[..., None]
    split = write_arrays(tmp_path / "test", images, digits.target[:20])
    batches = list(mirrored(split.dataset(8)))
    flipped = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(flipped, images[:, :, ::-1])
    np.testing.assert_array_equal(labels, digits.target[:20])
    assert not np.array_equal(flipped, images)
