"""What every source loads into: a training pool, an optional test split, the classes kept.

Shared by the source loaders (cnnpipe.data.sources) and the folder loader
(cnnpipe.data.folder_source).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.data.prepare import Split


@dataclass(frozen=True)
class LoadedSource:
    train: Split  # the training pool: val (and test, when ``test`` is None) are drawn from it
    test: Split | None
    class_names: tuple[str, ...]
    description: str  # where the data came from, for the data card
    checksums: dict[str, str]
    license: str
    report: dict  # quality.source_report(): files, skips, originals, duplicates
    card_extra: dict = field(default_factory=dict)



def select_classes(
    available: tuple[str, ...], wanted: tuple[str, ...] | list[str] | None
) -> tuple[str, ...]:
    """The classes to keep, in the order given (``available`` order when not given)."""
    if wanted is None:
        return tuple(available)
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise DataError(
            f"data.classes: unknown class(es) {', '.join(repr(n) for n in unknown)}; "
            f"available: {', '.join(available)}"
        )
    repeated = sorted({name for name in wanted if list(wanted).count(name) > 1})
    if repeated:
        raise DataError(f"data.classes lists {', '.join(repeated)} more than once")
    return tuple(wanted)


def relabel(
    labels: np.ndarray, available: tuple[str, ...], selected: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(mask of rows whose class is selected, their new labels in ``selected`` order)."""
    mapping = np.full(len(available), -1, dtype=np.int64)
    for new, name in enumerate(selected):
        mapping[available.index(name)] = new
    new_labels = mapping[np.asarray(labels, dtype=np.int64)]
    keep = new_labels >= 0
    return keep, new_labels[keep].astype(np.int32)
