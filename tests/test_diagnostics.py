"""Diagnostics: extended metrics, calibration and ROC/PR tables, Grad-CAM, feature maps, figures."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from fixtures import TINY_HYPERPARAMETERS  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
    top_k_accuracy_score,
)

from cnnpipe.evaluate.diagnostics import (  # noqa: E402
    feature_maps,
    find_gradcam_layer,
    gradcam_heatmaps,
    overlay_heatmap,
)
from cnnpipe.evaluate.metrics import (  # noqa: E402
    expected_calibration_error,
    extended_metrics,
    precision_recall_rows,
    reliability_table,
    roc_rows,
)
from cnnpipe.models import available_models, classification_head_loss  # noqa: E402
from cnnpipe.models.skeleton import build_model  # noqa: E402
from cnnpipe.evaluate.figures import (  # noqa: E402
    confidence_color,
    display_images,
    plot_confident_mistakes,
    plot_feature_maps,
    plot_gradcam_grid,
    plot_prediction_grid,
    plot_reliability_diagram,
)

pytestmark = pytest.mark.minutes(0.4)

# Tiny widths (as in test_models.py) so each build and Grad-CAM pass takes well under a
# second; MobileNet sees 64x64 so its last feature map is 2x2 rather than a single cell.
# A 64-pixel MobileNet keeps a 2x2 last feature map, so its heatmaps are not a single cell.
TINY = {**TINY_HYPERPARAMETERS,
        "mobilenet_transfer": {**TINY_HYPERPARAMETERS["mobilenet_transfer"], "image_size": 64}}

EXPECTED_GRADCAM_LAYER = {
    "simple_cnn": "conv3",
    "regularized_cnn": "block3_relu2",
    "overfit_cnn": "conv2",
    "bn_gap_cnn": "block3_relu",
    "residual_cnn": "block2_relu2",
    "inception_attention": "attention2_scale",
    "mobilenet_transfer": "mobilenetv2_base/out_relu",
}


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


def tiny(name: str, num_classes: int, input_shape=(32, 32, 1)):
    assert name in TINY, f"add tiny hyperparameters for `{name}` to TINY"
    return build_model(name, input_shape, num_classes, **TINY[name])


def noise(n: int, shape=(32, 32, 1), seed: int = 0) -> np.ndarray:
    """Raw pixels, what the models take: they normalize inside."""
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def assert_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        assert image.width > 50 and image.height > 50


# --- metrics ----------------------------------------------------------------------------------

# Two images at confidence 0.95 (bin 14, one right) and two at 0.55 (bin 8, one right).
CALIBRATION_LABELS = np.array([0, 1, 0, 2])
CALIBRATION_OUTPUTS = np.array(
    [[0.95, 0.03, 0.02], [0.95, 0.03, 0.02], [0.55, 0.25, 0.20], [0.20, 0.55, 0.25]]
)


def test_ece_and_reliability_table_on_a_known_example():
    # 2/4 * |0.5 - 0.95| + 2/4 * |0.5 - 0.55|
    assert expected_calibration_error(CALIBRATION_LABELS, CALIBRATION_OUTPUTS) == pytest.approx(
        0.25
    )
    rows = reliability_table(CALIBRATION_LABELS, CALIBRATION_OUTPUTS)
    assert rows == [
        {"bin_center": pytest.approx(8.5 / 15), "confidence": pytest.approx(0.55),
         "accuracy": 0.5, "count": 2},
        {"bin_center": pytest.approx(14.5 / 15), "confidence": pytest.approx(0.95),
         "accuracy": 0.5, "count": 2},
    ]
    perfect = np.eye(3)[CALIBRATION_LABELS]
    assert expected_calibration_error(CALIBRATION_LABELS, perfect) == 0.0


def test_ece_matches_a_per_bin_reference():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, 500)
    confidence, hits = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, 16)
    expected = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            expected += inside.mean() * abs(hits[inside].mean() - confidence[inside].mean())
    assert expected_calibration_error(labels, probs) == pytest.approx(expected)
    rows = reliability_table(labels, probs)
    assert sum(row["count"] for row in rows) == 500


def test_extended_metrics_multiclass():
    labels = np.array([0, 1, 2, 3, 4, 0, 0, 0])
    # True-class rank per row: 0, 1, 2, 3, 0, 4, 0, 0 -> top-3 hits 6/8, top-1 hits 4/8.
    outputs = np.array([
        [0.60, 0.10, 0.10, 0.10, 0.10],
        [0.50, 0.30, 0.10, 0.05, 0.05],
        [0.40, 0.30, 0.20, 0.06, 0.04],
        [0.40, 0.30, 0.20, 0.06, 0.04],
        [0.10, 0.10, 0.10, 0.10, 0.60],
        [0.04, 0.30, 0.20, 0.06, 0.40],
        [0.80, 0.05, 0.05, 0.05, 0.05],
        [0.70, 0.10, 0.10, 0.05, 0.05],
    ])
    names = ["a", "b", "c", "d", "e"]
    metrics = extended_metrics(labels, outputs, names)
    assert metrics["accuracy"] == pytest.approx(4 / 8)
    assert metrics["top3_accuracy"] == pytest.approx(6 / 8)
    assert metrics["top3_accuracy"] == pytest.approx(
        top_k_accuracy_score(labels, outputs, k=3, labels=range(5))
    )
    predicted = outputs.argmax(axis=1)
    # Recall per class: a 3/4, b 0, c 0, d 0, e 1.
    assert metrics["balanced_accuracy"] == pytest.approx((0.75 + 1) / 5)
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["weighted_f1"] == pytest.approx(
        f1_score(labels, predicted, average="weighted", zero_division=0)
    )
    assert 0 <= metrics["ece"] <= 1
    assert "roc_auc" not in metrics and "average_precision" not in metrics
    assert "top3_accuracy" not in extended_metrics(labels % 3, outputs[:, :3], names[:3])


def test_balanced_accuracy_ignores_classes_absent_from_labels():
    labels = np.array([0, 0, 0, 0, 1, 1])
    outputs = np.eye(3)[[0, 0, 0, 0, 0, 1]]
    assert extended_metrics(labels, outputs, ["a", "b", "c"])["balanced_accuracy"] == 0.75


def test_extended_metrics_binary_roc_auc_and_average_precision():
    labels = np.array([0, 0, 1, 1])
    outputs = np.array([[0.1], [0.4], [0.35], [0.8]])
    metrics = extended_metrics(labels, outputs, ["neg", "pos"])
    assert metrics["roc_auc"] == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ordered
    assert metrics["average_precision"] == pytest.approx((1 + 2 / 3) / 2)

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1)
    metrics = extended_metrics(labels, scores[:, None], ["neg", "pos"])
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert metrics["average_precision"] == pytest.approx(average_precision_score(labels, scores))
    assert "top3_accuracy" not in metrics

    # One class only: both undefined, so left out rather than written as NaN.
    single = extended_metrics(np.ones(3, int), np.array([[0.2], [0.7], [0.9]]), ["n", "p"])
    assert "roc_auc" not in single and "average_precision" not in single


def test_roc_and_pr_rows_are_downsampled_and_span_the_curve():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 5000)
    scores = np.clip(labels * 0.2 + rng.random(5000) * 0.8, 0, 1)[:, None]
    roc = roc_rows(labels, scores)
    assert 2 < len(roc) <= 200
    assert roc[0] == {"fpr": 0.0, "tpr": 0.0} and roc[-1] == {"fpr": 1.0, "tpr": 1.0}
    assert np.all(np.diff([row["fpr"] for row in roc]) >= 0)
    pr = precision_recall_rows(labels, scores)
    assert 2 < len(pr) <= 200 and set(pr[0]) == {"recall", "precision"}
    assert {pr[0]["recall"], pr[-1]["recall"]} == {0.0, 1.0}

    few = roc_rows(np.array([0, 0, 1, 1]), np.array([[0.1], [0.4], [0.35], [0.8]]))
    assert len(few) == 5

    # More than two classes: the micro-averaged one-vs-rest curve, so the table always exists.
    probs = np.eye(3)[[0, 1, 2, 0]] * 0.7 + 0.1
    multi = roc_rows(np.array([0, 1, 2, 1]), probs)
    assert multi[0] == {"fpr": 0.0, "tpr": 0.0} and multi[-1] == {"fpr": 1.0, "tpr": 1.0}

    with pytest.raises(ValueError, match="both positives and negatives"):
        roc_rows(np.ones(3, int), np.array([[0.2], [0.7], [0.9]]))


# --- Grad-CAM -----------------------------------------------------------------------------------

PATCH = 8


def patch_task(n: int, seed: int):
    """Pixel noise in [0, 100) with one bright 8x8 patch at a random, known position.

    The patch decides the class by its content: solid is class 0, horizontal stripes are
    class 1. Content rather than a fixed position per class: with two fixed positions a net
    may detect only one of them and call its absence the other class, leaving that class no
    positive evidence to show (an empty heatmap), and a heatmap that follows the patch
    around is a stronger check than one per-class location.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    corners = rng.integers(0, 32 - PATCH + 1, (n, 2))
    grid = np.arange(32)
    offset_rows = grid[None, :] - corners[:, :1]  # (n, 32)
    offset_cols = grid[None, :] - corners[:, 1:]
    in_rows = (offset_rows >= 0) & (offset_rows < PATCH)
    in_cols = (offset_cols >= 0) & (offset_cols < PATCH)
    patch = in_rows[:, :, None] & in_cols[:, None, :]
    striped = (offset_rows % 2 == 0)[:, :, None] | (labels == 0)[:, None, None]
    images = rng.random((n, 32, 32), dtype=np.float32) * 0.4
    images = np.where(patch, striped.astype(np.float32), images)
    return np.round(images[..., None] * 255).astype(np.uint8), labels, corners


def peaks_in_patch(heatmaps, corners, margin: int = 2) -> np.ndarray:
    """Whether each heatmap's maximum lies in its patch (grown by ``margin`` pixels)."""
    rows, cols = np.divmod(heatmaps.reshape(len(heatmaps), -1).argmax(axis=1), 32)
    low, high = corners - margin, corners + PATCH + margin
    return (rows >= low[:, 0]) & (rows < high[:, 0]) & (cols >= low[:, 1]) & (cols < high[:, 1])


def test_gradcam_points_at_the_patch_that_decides_the_class():
    # Widths picked so that 24 of 24 seeds train to 100% test accuracy (8-16 failed 1 in 12).
    model = build_model("simple_cnn", (32, 32, 1), 2, filters=(16, 16), dense_units=32)
    model.compile(optimizer="adam", loss=classification_head_loss(2), metrics=["accuracy"])
    train_x, train_y, _ = patch_task(400, seed=0)
    model.fit(train_x, train_y, epochs=5, batch_size=16, verbose=0)
    test_x, test_y, corners = patch_task(40, seed=1)
    assert model.evaluate(test_x, test_y, verbose=0)[1] > 0.9

    assert find_gradcam_layer(model) == "conv2"  # 13x13: two valid convs and one pool
    heatmaps = gradcam_heatmaps(model, test_x, class_indices=test_y)
    assert heatmaps.shape == (40, 32, 32)
    inside = peaks_in_patch(heatmaps, corners)
    # Per class: class 0 (sigmoid output near 0) is explained by the negated logit.
    for cls in (0, 1):
        assert inside[test_y == cls].mean() >= 0.8, (cls, inside)
    # Explaining the other class must not find the same evidence: the direction matters.
    assert peaks_in_patch(gradcam_heatmaps(model, test_x, class_indices=1 - test_y),
                          corners).mean() <= 0.3
    # The default explains the prediction, which is mostly the true class here.
    predicted = (model.predict(test_x, verbose=0)[:, 0] > 0.5).astype(int)
    np.testing.assert_allclose(
        gradcam_heatmaps(model, test_x), gradcam_heatmaps(model, test_x, predicted), atol=1e-6
    )


@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("name", available_models())
def test_gradcam_runs_for_every_architecture(name, num_classes):
    model = tiny(name, num_classes)
    layer = find_gradcam_layer(model)
    assert layer == EXPECTED_GRADCAM_LAYER[name]  # a new architecture needs an entry
    images = noise(5)
    heatmaps = gradcam_heatmaps(model, images, batch_size=2)  # exercises several batches
    assert heatmaps.shape == (5, 32, 32) and heatmaps.dtype == np.float32
    assert np.all(np.isfinite(heatmaps)) and heatmaps.min() >= 0 and heatmaps.max() <= 1
    # Every heatmap is either scaled to peak at 1 or empty (no positive evidence).
    assert set(np.round(heatmaps.max(axis=(1, 2)), 5)) <= {0.0, 1.0}
    chosen = gradcam_heatmaps(model, images, class_indices=np.arange(5) % num_classes,
                              layer=layer)
    assert chosen.shape == (5, 32, 32)

    maps = feature_maps(model, images[0], max_layers=2, max_channels=3)
    assert len(maps) == 2
    for path, activation in maps.items():
        assert activation.ndim == 3 and activation.shape[-1] <= 3, path
        assert np.all(np.isfinite(activation))


def test_nested_backbone_gradcam_matches_a_hand_built_forward_pass():
    model = tiny("mobilenet_transfer", 10)
    base = model.get_layer("mobilenetv2_base")
    front = keras.Model(model.input, model.get_layer("normalize").output)
    inner = keras.Model(base.input, [base.get_layer("out_relu").output, base.output])
    head = model.get_layer("predictions")
    images = noise(3, seed=4)
    before = model(images, training=False).numpy()
    classes = np.array([3, 7, 1])
    with tf.GradientTape() as tape:
        activations, features = inner(front(images), training=False)
        hidden = model.get_layer("dense")(model.get_layer("gap")(features))
        logits = tf.matmul(hidden, head.kernel) + head.bias
        score = tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))
    grads = tape.gradient(score, activations)
    cam = tf.nn.relu(tf.reduce_sum(
        tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * activations, axis=-1))
    expected = tf.image.resize(cam[..., None], (32, 32))[..., 0].numpy()
    peak = expected.max(axis=(1, 2), keepdims=True)
    expected = np.divide(expected, peak, out=np.zeros_like(expected), where=peak > 0)
    assert expected.max() == 1.0, "the reference must not be all zeros"
    np.testing.assert_allclose(
        gradcam_heatmaps(model, images, class_indices=classes), expected, atol=1e-4
    )
    assert list(feature_maps(model, images[0])) == [
        "mobilenetv2_base/Conv1", "mobilenetv2_base/expanded_conv_depthwise",
    ]
    # The gradient model is built on a clone of the graph sharing the weights; the model
    # itself computes what it did before.
    np.testing.assert_allclose(model(images, training=False).numpy(), before)


def test_gradcam_refuses_bad_arguments():
    model = tiny("simple_cnn", 10)
    with pytest.raises(ValueError, match="do not fit the model input"):
        gradcam_heatmaps(model, noise(2, shape=(28, 28, 1)))
    with pytest.raises(ValueError, match="class_indices"):
        gradcam_heatmaps(model, noise(2), class_indices=[0, 10])
    with pytest.raises(ValueError, match="no layer at path"):
        gradcam_heatmaps(model, noise(2), layer="nope")
    with pytest.raises(ValueError, match="not a nested model"):
        gradcam_heatmaps(model, noise(2), layer="conv3/inner")
    with pytest.raises(ValueError, match=r"\(N, H, W, C\) output"):
        gradcam_heatmaps(model, noise(2), layer="dense")


def test_overlay_heatmap_is_uint8_rgb_for_gray_and_color():
    heatmap = np.zeros((32, 32))
    heatmap[:8, :8] = 1.0
    gray = overlay_heatmap(noise(1)[0], heatmap)
    assert gray.shape == (32, 32, 3) and gray.dtype == np.uint8
    # jet maps 1 to dark red, 0 to dark blue: the hot corner is redder than the rest.
    assert gray[:8, :8, 0].mean() > gray[16:, 16:, 0].mean()
    color = overlay_heatmap(noise(2, shape=(32, 32, 3)) * 4 - 2, np.stack([heatmap] * 2))
    assert color.shape == (2, 32, 32, 3) and color.dtype == np.uint8
    with pytest.raises(ValueError, match="does not fit"):
        overlay_heatmap(noise(1)[0], np.zeros((16, 16)))


# --- figures ------------------------------------------------------------------------------------


def test_display_images_shows_the_raw_pixels_the_model_took():
    images = np.stack([np.full((4, 4, 1), 51), np.arange(0, 256, 17).reshape(4, 4, 1)])
    shown = display_images(images.astype(np.uint8))
    assert shown.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(shown[0], 0.2)  # no per-image contrast stretch
    assert shown[1].min() == 0 and shown[1].max() == 1
    with pytest.raises(ValueError, match="raw uint8"):
        display_images(images.astype(np.float32) / 255)
    assert confidence_color(0.9) == "green" and confidence_color(0.6) == "orange"
    assert confidence_color(0.5) == "red"


@pytest.mark.parametrize("channels", [1, 3])
def test_every_figure_writes_a_png(tmp_path, channels):
    rng = np.random.default_rng(5)
    images = noise(10, shape=(32, 32, channels))
    labels = rng.integers(0, 3, 10)
    outputs = rng.dirichlet(np.ones(3), 10)
    names = ["t-shirt", "trouser", "pullover"]
    heatmaps = rng.random((10, 32, 32))

    plot_prediction_grid(images, labels, outputs, names, tmp_path / "grid.png", n=6)
    read = images.__getitem__  # what evaluate passes: ShardSet.read
    plot_confident_mistakes(read, labels, outputs, names, tmp_path / "mistakes.png", n=4)
    plot_confident_mistakes(read, labels, np.eye(3)[labels], names, tmp_path / "none.png")
    plot_gradcam_grid(images[:5], heatmaps[:5], labels[:5], outputs[:5], names,
                      tmp_path / "gradcam.png")
    maps = {"conv1": rng.random((30, 30, 16)), "conv2": rng.random((13, 13, 5))}
    plot_feature_maps(maps, tmp_path / "maps.png", image=images[0])
    plot_reliability_diagram(labels, outputs, tmp_path / "reliability.png")
    binary = rng.random((10, 1))
    plot_prediction_grid(images, labels % 2, binary, ["cat", "dog"], tmp_path / "binary.png")

    for name in ("grid", "mistakes", "none", "gradcam", "maps", "reliability", "binary"):
        assert_png(tmp_path / f"{name}.png")
    assert not list(tmp_path.glob(".*")), "temporary files are cleaned up"
