"""Training curves: the per-epoch tables behind DVC's plots and their PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnpipe.core.figures import plt, save_figure


def curve_rows(history: dict[str, list[float]], metric: str) -> list[dict]:
    """Per-epoch train and validation values of ``metric`` for a DVC ``linear`` plot."""
    return [
        {"epoch": epoch, "train": train, "validation": val}
        for epoch, (train, val) in enumerate(
            zip(history[metric], history[f"val_{metric}"], strict=True), start=1
        )
    ]


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
    save_figure(fig, path)
