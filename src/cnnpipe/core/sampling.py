"""Class-proportional subsets: the data split and a variant's labelled-image budget share them."""

from __future__ import annotations

import numpy as np


def stratified_pick(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of about ``fraction`` of each class (at least one per class), sorted."""
    picked = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, int(round(len(members) * fraction)))
        picked.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(picked))


def labelled_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of about ``count`` images in the classes' proportions; all of them if 0 or more
    than there are. Seeded, so every run (and every variant with the same count) gets the same."""
    if count <= 0 or count >= len(labels):
        return np.arange(len(labels))
    return stratified_pick(labels, count / len(labels), np.random.default_rng(seed))
