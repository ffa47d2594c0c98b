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


def test_headline_split_keeps_six_figures_and_moves_the_rest_to_detail():
    from cnnpipe.evaluate.metrics import extended_metrics
    from cnnpipe.evaluate.outputs import HEADLINE_METRICS, split_headline

    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    outputs = np.eye(4)[[0, 1, 2, 0, 0, 1, 3, 3]] * 0.7 + 0.3 / 4
    metrics = {**extended_metrics(labels, outputs, list("abcd")), "total_params": 123}
    headline, detail = split_headline(metrics)
    assert tuple(headline) == HEADLINE_METRICS
    assert headline["accuracy"] == pytest.approx(6 / 8) and headline["total_params"] == 123
    assert {"per_class", "balanced_accuracy", "top3_accuracy", "weighted_f1"} <= detail.keys()
    assert headline["above_chance"] is True  # 6 of 8 against a majority share of 2 of 8: p 0.004
    assert {"majority_share", "chance_p"} <= detail.keys()
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


# --- the test against the majority class ------------------------------------------------

def scored(labels, correct: int) -> np.ndarray:
    """Predictions for ``labels`` with the first ``correct`` right and the rest wrong."""
    labels = np.asarray(labels)
    predicted = labels.copy()
    predicted[correct:] = (labels[correct:] + 1) % (labels.max() + 1)
    return predicted


def test_half_of_sixteen_binary_images_is_flagged_and_a_fashion_mnist_score_is_not():
    from cnnpipe.evaluate.chance import chance_test

    binary = np.arange(16) % 2  # the small folders' 16-image test splits
    at_chance = chance_test(binary, scored(binary, 8))
    assert at_chance["majority_share"] == 0.5 and not at_chance["above_chance"]
    assert at_chance["chance_p"] == pytest.approx(0.5982, abs=1e-4)
    # 12 of 16 is significant (p 0.038), 11 of 16 is not (p 0.105): a small split's bar.
    assert chance_test(binary, scored(binary, 12))["above_chance"]
    assert not chance_test(binary, scored(binary, 11))["above_chance"]
    fashion = np.arange(10_000) % 10
    verdict = chance_test(fashion, scored(fashion, 9_000))
    assert verdict["majority_share"] == pytest.approx(0.1) and verdict["above_chance"]
    # An imbalanced split: always answering the 80% class scores 0.8, which is no model.
    skewed = np.array([0] * 80 + [1] * 20)
    assert not chance_test(skewed, np.zeros(100, int))["above_chance"]


def test_a_collapsed_variant_is_explained_from_its_training_record_and_curve():
    from cnnpipe.evaluate.chance import chance_test, chance_warning, likely_cause

    labels = np.arange(48) % 3
    metrics = {"accuracy": 16 / 48, "num_test_images": 48,
               **chance_test(labels, np.zeros(48, int))}
    training = {"epochs_run": 4, "best_epoch": 1, "val_images": 15,
                "pretrain_near_chance": True, "pretrain_val_accuracy": 0.27,
                "pretrain_chance_accuracy": 0.25}
    curve = [{"epoch": str(e), "train": str(t), "validation": "0.3333"}
             for e, t in enumerate((0.62, 0.93, 0.97, 0.98), start=1)]
    cause = likely_cause(metrics, training, curve)
    assert "early stopping restored the epoch-1 weights after 4 epochs" in cause
    assert "validation split of 15 images" in cause
    assert "training accuracy reached 0.98 while validation accuracy was 0.33" in cause
    assert "rotation pretraining reached 0.27 validation accuracy against a chance of 0.25" \
        in cause
    warning = chance_warning("bn_gap_cnn", {**metrics, "chance_cause": cause})
    assert warning.startswith("warning: bn_gap_cnn is not above chance: test accuracy 0.3333 "
                              "against a majority-class share of 0.3333")
    assert "p = 0.5" in warning and "\n" not in warning
    # A model that learned nothing at all, and one a small test split cannot tell from chance.
    flat = [{"epoch": "1", "train": "0.34", "validation": "0.33"}]
    assert "never passed 0.34" in likely_cause(metrics, {"best_epoch": 1, "epochs_run": 1}, flat)
    lucky = {**metrics, "accuracy": 0.6875, "num_test_images": 16, "majority_share": 0.5}
    assert likely_cause(lucky, {}) == "16 test images are too few to tell 0.688 from 0.500"


def test_the_evaluate_stage_says_why_on_stderr_and_in_its_detail(tmp_path, monkeypatch, capsys):
    import importlib.util
    import json
    from pathlib import Path

    from cnnpipe.evaluate.chance import chance_test

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("stage_evaluate", root / "stages/evaluate.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics/train").mkdir(parents=True)
    (tmp_path / "metrics/train/mobilenet_transfer.json").write_text(
        json.dumps({"epochs_run": 5, "best_epoch": 1, "val_images": 16}))
    labels = np.arange(16) % 2
    metrics = {"accuracy": 0.5, "num_test_images": 16, **chance_test(labels, np.zeros(16, int))}
    stage._explain_chance("mobilenet_transfer", metrics)
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: mobilenet_transfer is not above chance: test accuracy 0.5000")
    assert line.endswith("likely cause: early stopping restored the epoch-1 weights after 5 "
                         "epochs; its validation split of 16 images is too small to pick the "
                         "epoch (data.val_fraction)")
    assert metrics["chance_cause"] in line
