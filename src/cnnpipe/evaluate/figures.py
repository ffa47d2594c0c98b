"""The evaluate stage's matplotlib figures (PNG): confusion, reliability, galleries, Grad-CAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnpipe.evaluate.metrics import (
    CALIBRATION_BINS,
    as_class_probabilities,
    expected_calibration_error,
    reliability_table,
)
from cnnpipe.core.figures import plt, save_figure


def plot_confusion_matrix(
    counts: np.ndarray, class_names, path: str | Path, title: str = ""
) -> None:
    """Row-normalized confusion matrix (recall on the diagonal) with class names."""
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = max(5.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title or "confusion matrix (row-normalized)")
    if len(class_names) <= 20:
        for i, j in np.ndindex(normalized.shape):
            value = normalized[i, j]
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if value > 0.5 else "black")
    save_figure(fig, path)


# --- image galleries, Grad-CAM, feature maps and calibration --------------------------------

CONFIDENT, UNSURE = 0.8, 0.5  # the colour steps of a prediction's confidence
_MISTAKE_COLOR = "red"
_GALLERY_COLUMNS = 8


def display_images(images) -> np.ndarray:
    """Raw uint8 model inputs ``(N, H, W, C)`` (C 1 or 3, or ``(N, H, W)``) -> RGB in [0, 1].

    The models take the stored pixels and normalize inside, so what is drawn is exactly
    what the model was given.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"expected raw uint8 images; got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected (N, H, W, 1 or 3) images; got shape {images.shape}")
    scaled = images.astype(np.float64) / 255.0
    return np.repeat(scaled, 3, axis=-1) if scaled.shape[-1] == 1 else scaled


def confidence_color(confidence: float) -> str:
    if confidence > CONFIDENT:
        return "green"
    return "orange" if confidence > UNSURE else "red"


def _predictions(labels, outputs):
    probs = as_class_probabilities(outputs)
    labels = np.asarray(labels, dtype=np.int64)
    if len(probs) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(probs)} outputs")
    return labels, probs.argmax(axis=1), probs.max(axis=1)


def _tile_grid(count: int, columns: int, tile: float = 1.8, extra_height: float = 0.5):
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(tile * columns, (tile + extra_height) * rows), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    return fig, axes


def _label_tile(ax, class_names, true: int, predicted: int, confidence: float) -> None:
    """Predicted class and confidence, coloured by confidence; mistakes get a red frame."""
    text = f"{class_names[predicted]} {confidence:.0%}"
    if predicted != true:
        text += f"\ntrue: {class_names[true]}"
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color(_MISTAKE_COLOR)
            spine.set_linewidth(3)
    ax.set_title(text, fontsize=8, color=confidence_color(confidence))


def _gallery(images, labels, predicted, confidence, class_names, path, title):
    shown = display_images(images)
    fig, axes = _tile_grid(len(shown), _GALLERY_COLUMNS)
    for i, ax in enumerate(axes.flat):
        if i < len(shown):
            ax.imshow(shown[i], interpolation="nearest")
            _label_tile(ax, class_names, labels[i], predicted[i], confidence[i])
        else:
            ax.set_visible(False)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def plot_prediction_grid(
    images, labels, outputs, class_names, path: str | Path, n: int = 16, title: str = ""
) -> None:
    """The first ``n`` images with predicted class and confidence (green above 0.8, orange
    above 0.5, red otherwise); a mistake shows its true class and a red frame."""
    labels, predicted, confidence = _predictions(labels, outputs)
    if len(labels) == 0:
        raise ValueError("plot_prediction_grid needs at least one image")
    shown = slice(0, min(n, len(labels)))
    _gallery(np.asarray(images)[shown], labels[shown], predicted[shown], confidence[shown],
             class_names, path, title or "predictions")


def plot_confident_mistakes(
    read_images, labels, outputs, class_names, path: str | Path, n: int = 16, title: str = ""
) -> None:
    """The ``n`` wrong predictions made with the highest confidence, most confident first.

    ``read_images(indices)`` returns those images (e.g. ``ShardSet.read``), so only the ``n``
    shown are ever loaded. These are the labelling errors and systematic confusions worth looking at; a model
    without mistakes gets a figure saying so, so the stage output always exists.
    """
    labels, predicted, confidence = _predictions(labels, outputs)
    wrong = np.flatnonzero(predicted != labels)
    title = title or "most confident mistakes"
    if len(wrong) == 0:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.set_title(title)
        save_figure(fig, path)
        return
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    _gallery(read_images(order), labels[order], predicted[order], confidence[order],
             class_names, path, title)


def plot_gradcam_grid(
    images, heatmaps, labels, outputs, class_names, path: str | Path,
    title: str = "", alpha: float = 0.4,
) -> None:
    """Each image beside its Grad-CAM overlay (``jet``, red = most evidence), four per row."""
    labels, predicted, confidence = _predictions(labels, outputs)
    shown = display_images(images)
    heatmaps = np.asarray(heatmaps)
    if heatmaps.shape != shown.shape[:3] or len(shown) != len(labels):
        raise ValueError(
            f"heatmaps {heatmaps.shape}, images {shown.shape[:3]} and {len(labels)} labels "
            "do not match"
        )
    pairs_per_row = 4
    fig, axes = _tile_grid(2 * len(shown), 2 * pairs_per_row)
    for i, ax in enumerate(axes.flat):
        image = i // 2
        if image >= len(shown):
            ax.set_visible(False)
        elif i % 2 == 0:
            ax.imshow(shown[image], interpolation="nearest")
            ax.set_title(f"true: {class_names[labels[image]]}", fontsize=8)
        else:
            ax.imshow(shown[image], interpolation="nearest")
            ax.imshow(heatmaps[image], cmap="jet", alpha=alpha, vmin=0, vmax=1,
                      interpolation="bilinear")
            _label_tile(ax, class_names, labels[image], predicted[image], confidence[image])
    fig.suptitle(title or "Grad-CAM (explaining the predicted class)")
    save_figure(fig, path)


def plot_feature_maps(
    maps: dict[str, np.ndarray], path: str | Path, image=None, title: str = ""
) -> None:
    """One block of rows per layer, one tile per channel (``viridis``, scaled per channel).

    ``maps`` is what ``cnnpipe.evaluate.diagnostics.feature_maps`` returns; ``image``, the input those
    activations came from, is drawn first when given.
    """
    if not maps:
        raise ValueError("plot_feature_maps needs at least one layer's activations")
    columns = _GALLERY_COLUMNS
    blocks = [(name, np.asarray(act)) for name, act in maps.items()]
    rows = [-(-act.shape[-1] // columns) for _, act in blocks]
    total = sum(rows) + (image is not None)
    fig, axes = plt.subplots(total, columns, figsize=(1.5 * columns, 1.6 * total), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    row = 0
    if image is not None:
        axes[0, 0].imshow(display_images(np.asarray(image)[None])[0], interpolation="nearest")
        axes[0, 0].set_title("input", fontsize=8)
        row = 1
    for (name, act), height in zip(blocks, rows, strict=True):
        for channel in range(act.shape[-1]):
            ax = axes[row + channel // columns, channel % columns]
            ax.imshow(act[..., channel], cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name} #{channel}" if channel == 0 else f"#{channel}", fontsize=7)
        row += height
    fig.suptitle(title or "feature maps")
    save_figure(fig, path)


def plot_reliability_diagram(
    labels, outputs, path: str | Path, bins: int | None = None, title: str = ""
) -> None:
    """Accuracy per confidence bin against the diagonal, with ECE, over a count histogram."""
    bins = bins or CALIBRATION_BINS
    rows = reliability_table(labels, outputs, bins)
    centers = np.array([r["bin_center"] for r in rows])
    accuracy = np.array([r["accuracy"] for r in rows])
    confidence = np.array([r["confidence"] for r in rows])
    counts = np.array([r["count"] for r in rows])
    ece = expected_calibration_error(labels, outputs, bins)

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = 1.0 / bins
    top.bar(centers, accuracy, width=width, edgecolor="black", label="accuracy")
    # The hatched part is the gap to perfect calibration, drawn from accuracy to confidence.
    top.bar(centers, confidence - accuracy, bottom=accuracy, width=width, color="red",
            alpha=0.3, hatch="//", edgecolor="red", label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title or 'reliability diagram'} (ECE {ece:.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, counts, width=width, color="grey", edgecolor="black")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("images")
    save_figure(fig, path)
