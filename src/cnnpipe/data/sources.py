"""One entry point for every data source named by ``data.source`` in params.yaml.

:func:`load_source` reads a source into a training pool and (when the source has one) a test
split, plus what the data card and the quality report need. :func:`build_dataset` then
draws the missing splits, checks the quality thresholds and returns everything the prepare
stage writes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnpipe.data import archive as archive_lib
from cnnpipe.data import fashion_mnist
from cnnpipe.data.download import DownloadLimits
from cnnpipe.data.folder_source import from_folder
from cnnpipe.data.loaded import LoadedSource, relabel, select_classes  # noqa: F401 (re-exported)
from cnnpipe.data.prepare import PreparedData, Split, SplitError, data_card, prepare_splits
from cnnpipe.data.quality import (
    DataQualityError,
    Item,
    complete_report,
    counts_per_split,
    enforce_quality,
    find_duplicates,
    image_stats,
    source_report,
)
from cnnpipe.core.errors import DataError
from cnnpipe.core.sampling import stratified_pick

KERAS_SOURCES = ("mnist", "cifar10", "cifar100")


@dataclass(frozen=True)
class BuiltDataset:
    prepared: PreparedData
    card: dict
    report: dict  # the completed quality report


def load_source(data_cfg, spool_dir: str | Path | None = None) -> LoadedSource:
    """Read ``data_cfg.source``; user-fixable problems raise DataError with one line.

    Folder and archive images are decoded into a temporary file in ``spool_dir`` (the system
    temporary folder when None; it should be a real disk, not a RAM-backed tmpfs); the
    returned splits read from it, so it lives as long as they do.
    """
    source = data_cfg.source
    if source == "fashion_mnist":
        return _load_fashion_mnist(data_cfg)
    if source in KERAS_SOURCES:
        return _load_keras_dataset(data_cfg, source)
    if source == "image_folder":
        return _load_image_folder(data_cfg, spool_dir)
    if source == "archive":
        return _load_archive(data_cfg, spool_dir)
    raise DataError(f"unknown data.source `{source}`")  # config validation normally stops this


def _load_fashion_mnist(data_cfg) -> LoadedSource:
    cfg = data_cfg.fashion_mnist
    raw = fashion_mnist.load_fashion_mnist(
        Path(cfg.local_dir), cfg.url, Path(cfg.download_dir),
        DownloadLimits.from_settings(data_cfg.download),
    )
    return _from_arrays(
        data_cfg,
        train=Split(raw.train_images[..., None], raw.train_labels.astype(np.int32)),
        test=Split(raw.test_images[..., None], raw.test_labels.astype(np.int32)),
        class_names=fashion_mnist.CLASS_NAMES,
        description=raw.source,
        checksums=raw.checksums,
        license=fashion_mnist.LICENSE,
        file_format="IDX",
    )


def _load_keras_dataset(data_cfg, source: str) -> LoadedSource:
    from cnnpipe.data.keras_datasets import load_keras_dataset

    raw = load_keras_dataset(source)
    return _from_arrays(
        data_cfg,
        train=Split(raw.train_images, raw.train_labels),
        test=Split(raw.test_images, raw.test_labels),
        class_names=raw.class_names,
        description=raw.source,
        checksums=raw.checksums,
        license=raw.license,
        file_format=f"keras.datasets.{source}",
    )


def _load_image_folder(data_cfg, spool_dir: str | Path | None) -> LoadedSource:
    cfg = data_cfg.image_folder
    return from_folder(
        data_cfg,
        Path(cfg.path),
        description=f"image_folder:{cfg.path}",
        checksums={},
        license=cfg.license,
        card_extra={},
        notes=[],
        spool_dir=spool_dir,
    )


def _load_archive(data_cfg, spool_dir: str | Path | None) -> LoadedSource:
    cfg = data_cfg.archive
    archive_path, digest = archive_lib.fetch_archive(
        cfg.path_or_url, cfg.sha256, Path(cfg.download_dir),
        DownloadLimits.from_settings(data_cfg.download),
    )
    extraction = archive_lib.extract_archive(
        archive_path,
        Path(cfg.download_dir) / "extracted" / digest[:16],
        max_bytes=cfg.max_extracted_mb * 2**20,
        max_members=cfg.max_members,
    )
    root = archive_lib.dataset_root(extraction.folder, cfg.subdir)
    notes = []
    if extraction.links_not_extracted:
        notes.append(
            f"{extraction.links_not_extracted} link(s) in the archive were not extracted "
            "(only regular files are)"
        )
    return from_folder(
        data_cfg,
        root,
        description=f"archive:{cfg.path_or_url}",
        checksums={"archive": digest},
        license=cfg.license,
        card_extra={
            "archive": {
                "sha256": digest,
                "members": extraction.members,
                "bytes_extracted": extraction.bytes,
                "dataset_folder": root.relative_to(extraction.folder).as_posix(),
            }
        },
        notes=notes,
        spool_dir=spool_dir,
    )


def _from_arrays(
    data_cfg,
    *,
    train: Split,
    test: Split,
    class_names: tuple[str, ...],
    description: str,
    checksums: dict[str, str],
    license: str,
    file_format: str,
) -> LoadedSource:
    selected = select_classes(tuple(class_names), data_cfg.classes)
    splits = {}
    ignored = {}
    for name, split in (("train", train), ("test", test)):
        keep, labels = relabel(split.labels, tuple(class_names), selected)
        if not keep.all():
            ignored["unselected_class"] = ignored.get("unselected_class", 0) + int((~keep).sum())
        splits[name] = Split(split.images[keep], labels)
    items = [
        Item(f"{name}[{index}]", selected[label], name, hashlib.sha256(image.tobytes()).hexdigest())
        for name, split in splits.items()
        for index, (image, label) in enumerate(zip(split.images, split.labels, strict=True))
    ]
    total = len(items)
    height, width, channels = splits["train"].images.shape[1:]
    originals = image_stats(
        [width] * total, [height] * total, ["L" if channels == 1 else "RGB"] * total,
        [file_format] * total,
    )
    report = source_report(
        source=description,
        class_names=selected,
        image_files=total,
        skipped=[],
        ignored=ignored,
        ignored_extensions={},
        originals=originals,
        duplicates=find_duplicates(items, remove=False),
        notes=[],
    )
    return LoadedSource(
        train=splits["train"],
        test=splits["test"],
        class_names=selected,
        description=description,
        checksums=checksums,
        license=license,
        report=report,
    )


def carve_test_split(pool: Split, test_fraction: float, seed: int) -> tuple[Split, Split]:
    """(train pool, test) with about ``test_fraction`` of every class in test."""
    # Its own stream: prepare_splits draws from default_rng(seed) afterwards, and the val
    # split must not depend on whether a test split had to be carved first.
    rng = np.random.default_rng([seed, 0x7E57])
    test_idx = stratified_pick(pool.labels, test_fraction, rng)
    mask = np.ones(len(pool), dtype=bool)
    mask[test_idx] = False
    return pool.take(np.flatnonzero(mask)), pool.take(test_idx)


def build_dataset(data_cfg, seed: int, spool_dir: str | Path | None = None) -> BuiltDataset:
    """Source -> train/val/test, data card and completed quality report.

    The splits of folder and archive sources are lazy views of decoded images spooled in
    ``spool_dir`` (see :func:`load_source`); write them with
    :func:`cnnpipe.data.storage.write_prepared`.

    Raises DataQualityError (a DataError carrying ``.report``) when a threshold is violated,
    so the caller can still write the report that explains the failure.
    """
    loaded = load_source(data_cfg, spool_dir)
    train_pool, test = loaded.train, loaded.test
    notes = []
    if test is None:
        train_pool, test = carve_test_split(train_pool, data_cfg.test_fraction, seed)
        notes.append(
            f"the source has no test split: {100 * data_cfg.test_fraction:g}% of every class "
            "was drawn as test (data.test_fraction)"
        )
    report = {**loaded.report, "notes": loaded.report["notes"] + notes}
    try:
        prepared = prepare_splits(
            train_pool,
            test,
            loaded.class_names,
            val_fraction=data_cfg.val_fraction,
            seed=seed,
            train_limit=data_cfg.train_limit,
            test_limit=data_cfg.test_limit,
        )
    except DataError as exc:
        # The counts the splits were to be drawn from: after data.train_limit and test_limit.
        drawn_from = exc.pools if isinstance(exc, SplitError) else {
            "train": train_pool.labels, "test": test.labels}
        pools = counts_per_split(drawn_from, loaded.class_names)
        failed = complete_report(
            report, pools, data_cfg.min_images_per_class, data_cfg.max_unreadable_fraction
        )
        failed["problems"].append(str(exc))
        raise DataQualityError(f"{exc}; details in reports/data_quality.md", failed) from None
    counts = counts_per_split(
        {name: split.labels for name, split in prepared.splits().items()}, loaded.class_names
    )
    report = complete_report(
        report, counts, data_cfg.min_images_per_class, data_cfg.max_unreadable_fraction
    )
    enforce_quality(report)
    card = data_card(prepared, loaded.description, loaded.checksums, loaded.license)
    card["task"] = "binary" if len(loaded.class_names) == 2 else "multiclass"
    card.update(loaded.card_extra)
    card["quality"] = {
        "skipped_files": report["files"]["skipped"],
        "duplicates_removed": report["duplicates"]["removed"],
    }
    return BuiltDataset(prepared=prepared, card=card, report=report)
