"""What evaluate@<variant> writes beyond the plots: headline metrics, detail, predictions.

``metrics/<variant>.json`` is what DVC shows and diffs (``dvc metrics show``, ``dvc exp
show``): a handful of numbers per variant, so nine variants fit a terminal and a diff shows
what moved. Everything else a person may still want (per-class scores, balanced and top-3
accuracy, the test-set size) goes to ``reports/evaluation/<variant>.json``, tracked in git but
not declared as a metric. ``reports/predictions/<variant>.npy`` keeps each test image's label
and predicted class, so ``cnnpipe report`` can test whether a change between two commits is
more than noise (a paired test needs the per-image outcomes, not just the accuracies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.core.io import atomic_path

# above_chance beside the numbers: a variant no better than answering the commonest class
# shows in `dvc metrics show`, not only in the detail (which keeps majority_share, chance_p
# and the likely cause).
HEADLINE_METRICS = ("accuracy", "above_chance", "macro_f1", "loss", "ece", "total_params")


def split_headline(metrics: dict) -> tuple[dict, dict]:
    """(headline, detail): the headline keys present, and every other key."""
    headline = {key: metrics[key] for key in HEADLINE_METRICS if key in metrics}
    detail = {key: value for key, value in metrics.items() if key not in headline}
    return headline, detail


def write_predictions(path: str | Path, labels, predicted) -> None:
    """Save (label, predicted class) per test image, in test-set order, as an (N, 2) array
    of the smallest unsigned type that holds the class ids: 20 KB for 10,000 images, and
    byte-identical for identical predictions (``.npy`` has no timestamp, unlike ``.npz``)."""
    table = np.stack([np.asarray(labels), np.asarray(predicted)], axis=1)
    if table.size and table.min() < 0:
        raise ValueError("class ids must be non-negative")
    dtype = np.min_scalar_type(int(table.max(initial=0)))
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, table.astype(dtype), allow_pickle=False)


def read_predictions(source) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted) from a path or an open binary file written by
    :func:`write_predictions`."""
    try:
        table = np.load(source, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read predictions from {source}: {exc}") from None
    if table.ndim != 2 or table.shape[1] != 2:
        raise DataError(f"predictions of shape {table.shape}; expected (images, 2)")
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
