"""Long-format tables that put every variant on one chart (``plots/compare/*.csv``).

DVC draws a folder of per-variant CSVs as one chart per file; a table with a ``variant``
column, drawn by the templates in ``.dvc/plots/``, gives one chart per metric with every
variant overlaid, and follows the variants in params.yaml without editing dvc.yaml.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from cnnpipe.core import layout
from cnnpipe.core.errors import DataError

OVERLAY_DIR = Path("plots/compare")
CURVE_METRICS = ("accuracy", "loss")
SPLITS = {"train": "train", "validation": "validation"}


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path} not found; run the stage that produces it (dvc repro)")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def curve_rows(variants) -> list[dict]:
    """One row per variant, epoch and split with both curves' values."""
    rows = []
    for variant in variants:
        tables = {m: _read_rows(layout.curve_table(m, variant)) for m in CURVE_METRICS}
        by_epoch = {m: {r["epoch"]: r for r in table} for m, table in tables.items()}
        for epoch in sorted(by_epoch["accuracy"], key=int):
            for column, split in SPLITS.items():
                row = {"variant": variant, "epoch": int(epoch), "split": split}
                for metric in CURVE_METRICS:
                    row[metric] = by_epoch[metric].get(epoch, {}).get(column, "")
                rows.append(row)
    return rows


def stacked_rows(kind: str, variants) -> list[dict]:
    """``plots/<kind>/<variant>.csv`` for every variant, stacked with a ``variant`` column."""
    return [{"variant": variant, **row}
            for variant in variants for row in _read_rows(layout.plot_table(kind, variant))]


def confusion_count_rows(variants, class_names) -> list[dict]:
    """Per variant, the count and row share (recall) of every actual/predicted pair: 100 rows
    a variant for ten classes, where the per-image tables hold one row per test image."""
    rows = []
    for variant in variants:
        pairs = Counter((r["actual"], r["predicted"])
                        for r in _read_rows(layout.confusion_table(variant)))
        totals = Counter()
        for (actual, _), count in pairs.items():
            totals[actual] += count
        for actual in class_names:
            for predicted in class_names:
                count = pairs.get((actual, predicted), 0)
                share = count / totals[actual] if totals[actual] else 0.0
                rows.append({"variant": variant, "actual": actual, "predicted": predicted,
                             "count": count, "share": round(share, 4)})
    return rows
