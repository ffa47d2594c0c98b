"""Seeded stratified splitting and the data card; no file I/O here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.core.io import Split
from cnnpipe.core.sampling import stratified_pick


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
    if train_limit and train_limit < len(train):
        train = train.take(stratified_pick(train.labels, train_limit / len(train), rng))
    if test_limit and test_limit < len(test):
        test = test.take(stratified_pick(test.labels, test_limit / len(test), rng))
    classes = np.unique(train.labels)
    if len(classes) < 2:
        raise DataError(f"the training data holds {len(classes)} class(es); at least 2 are needed")
    val_idx = stratified_pick(train.labels, val_fraction, rng)
    train_mask = np.ones(len(train), dtype=bool)
    train_mask[val_idx] = False
    if not train_mask.any():
        raise DataError("data.val_fraction leaves no training images")
    return PreparedData(
        train=train.take(np.flatnonzero(train_mask)),
        val=train.take(val_idx),
        test=test,
        class_names=tuple(class_names),
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
