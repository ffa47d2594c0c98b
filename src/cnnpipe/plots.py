"""Matplotlib figures (PNG) and the small tables DVC turns into interactive plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnpipe.io import atomic_path  # noqa: E402


def curve_rows(history: dict[str, list[float]], metric: str) -> list[dict]:
    """Per-epoch train and validation values of ``metric`` for a DVC ``linear`` plot."""
    return [
        {"epoch": epoch, "train": train, "validation": val}
        for epoch, (train, val) in enumerate(
            zip(history[metric], history[f"val_{metric}"], strict=True), start=1
        )
    ]


def _save(fig, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_training_history(
    history: dict[str, list[float]], path: str | Path, title: str = "", fine_tune_start: int = 0
) -> None:
    """Accuracy and loss, train vs validation, side by side (the tutorial's figure)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.plot(epochs, history[metric], label="train")
        ax.plot(epochs, history[f"val_{metric}"], label="validation")
        if fine_tune_start:
            ax.axvline(fine_tune_start - 0.5, color="grey", linestyle="--", label="fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{title} {metric}".strip())
        ax.legend()
        ax.grid(alpha=0.3)
    _save(fig, path)


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
    _save(fig, path)
