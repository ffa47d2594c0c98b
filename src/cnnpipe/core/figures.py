"""Matplotlib set up for headless stages, and an atomic PNG writer every stage's figures use."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402

from cnnpipe.core.io import atomic_path  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
