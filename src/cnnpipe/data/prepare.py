"""Seeded stratified splitting and the data card; no file I/O here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.core.io import Split
from cnnpipe.core.sampling import stratified_pick


class SplitError(DataError):
    """Splits that cannot be drawn, with the labels of the pools they were to be drawn from
    (after data.train_limit and data.test_limit), which the quality report then counts."""

    def __init__(self, message: str, pools: dict[str, np.ndarray]):
        super().__init__(message)
        self.pools = pools


@dataclass(frozen=True)
class PreparedData:
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}


def prepare_splits(
    train: Split,
    test: Split,
    class_names: tuple[str, ...],
    val_fraction: float,
    seed: int,
    train_limit: int = 0,
    test_limit: int = 0,
) -> PreparedData:
    """Stratified train/val split of ``train``; ``test`` stays the test set.

    ``train_limit``/``test_limit`` (0 = all) shrink the data class-proportionally, for quick
    runs and tests; they are applied before the split so the val share stays as configured.
    """
    if train.images.ndim == 3:
        train = Split(train.images[..., None], train.labels)
    if test.images.ndim == 3:
        test = Split(test.images[..., None], test.labels)
    rng = np.random.default_rng(seed)
    pool_labels = train.labels
    limited = bool(train_limit) and train_limit < len(pool_labels)
    if limited:
        train = train.take(stratified_pick(pool_labels, train_limit / len(pool_labels), rng))
    if test_limit and test_limit < len(test):
        test = test.take(stratified_pick(test.labels, test_limit / len(test), rng))
    pools = {"train": train.labels, "test": test.labels}
    classes = np.unique(train.labels)
    if len(classes) < 2:
        raise SplitError(
            f"the training data holds {len(classes)} class(es); at least 2 are needed", pools
        )
    val_idx = stratified_pick(train.labels, val_fraction, rng)
    train_mask = np.ones(len(train), dtype=bool)
    train_mask[val_idx] = False
    if not train_mask.any():
        cause = _train_limit_cause(train_limit, pool_labels, train.labels) if limited else None
        raise SplitError(cause or "data.val_fraction leaves no training images", pools)
    return PreparedData(
        train=train.take(np.flatnonzero(train_mask)),
        val=train.take(val_idx),
        test=test,
        class_names=tuple(class_names),
    )


def _train_limit_cause(train_limit: int, pool_labels: np.ndarray, kept: np.ndarray) -> str:
    """The refusal when data.train_limit left each class too few images to also give one to
    validation (data.val_fraction takes at least one of each), with a limit that would not."""
    pool = np.bincount(pool_labels)
    smallest = int(pool[pool > 0].min())
    # The class-proportional limit keeps round(count x limit / pool) of a class: two of the
    # smallest from this limit on.
    enough = min(math.ceil(2 * len(pool_labels) / smallest), len(pool_labels))
    return (
        f"data.train_limit={train_limit} leaves {len(kept)} images for training and "
        f"validation ({int(np.bincount(kept).max())} or fewer per class), and data.val_fraction "
        f"takes at least one of each class: none is left to train on; raise data.train_limit "
        f"(about {enough} keeps two of every class) or set it to 0 for all {len(pool_labels)}"
    )


def data_card(data: PreparedData, source: str, checksums: dict[str, str], license: str) -> dict:
    """What a person (and the predict command) needs to know about the prepared data."""
    counts = {}
    for split_name, split in data.splits().items():
        per_class = np.bincount(split.labels, minlength=len(data.class_names))
        counts[split_name] = {
            name: int(n) for name, n in zip(data.class_names, per_class, strict=True)
        }
    return {
        "class_names": list(data.class_names),
        "num_classes": len(data.class_names),
        "image_shape": list(data.train.images.shape[1:]),
        "channels": int(data.train.images.shape[-1]),
        "sizes": {name: len(split) for name, split in data.splits().items()},
        "counts_per_class": counts,
        "source": source,
        "license": license,
        "checksums_sha256": checksums,
    }
