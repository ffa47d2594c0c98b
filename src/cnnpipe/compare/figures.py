"""The compare stage's chart: accuracy against model size and training time."""

from __future__ import annotations

from pathlib import Path

from cnnpipe.core.figures import plt, save_figure


def plot_accuracy_vs_cost(rows: list[dict], path: str | Path) -> None:
    """Test accuracy against parameters and against training time, one labelled point per variant."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, key, label in zip(
        axes, ("total_params", "train_seconds"), ("parameters (log scale)", "training time (s)"),
        strict=True,
    ):
        points = [r for r in rows if r.get(key) is not None]
        ax.scatter([r[key] for r in points], [r["accuracy"] for r in points])
        for r in points:
            ax.annotate(r["variant"], (r[key], r["accuracy"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        if key == "total_params":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle("accuracy against model size and training cost")
    save_figure(fig, path)
