"""One entry point for every data source named by ``data.source`` in params.yaml.

:func:`load_source` reads a source into a training pool and (when the source has one) a test
split, plus what the data card and the quality report need. :func:`build_dataset` then
draws the missing splits, checks the quality thresholds and returns everything the prepare
stage writes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cnnpipe.data import archive as archive_lib
from cnnpipe.data import fashion_mnist
from cnnpipe.data.bounds import check_image_sides
from cnnpipe.data.decode import IMAGE_EXTENSIONS
from cnnpipe.data.download import DownloadLimits
from cnnpipe.data.folders import (
    DecodeOutcome,
    FolderScan,
    ImageFile,
    iter_decode_files,
    scan_image_folder,
)
from cnnpipe.data.prepare import PreparedData, Split, data_card, prepare_splits
from cnnpipe.data.spool import Spool
from cnnpipe.data.quality import (
    DataQualityError,
    Item,
    complete_report,
    counts_per_split,
    enforce_quality,
    find_duplicates,
    image_stats,
    label_conflict_problem,
    source_report,
)
from cnnpipe.core.errors import DataError
from cnnpipe.core.sampling import stratified_pick

KERAS_SOURCES = ("mnist", "cifar10", "cifar100")


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


@dataclass(frozen=True)
class BuiltDataset:
    prepared: PreparedData
    card: dict
    report: dict  # the completed quality report


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
    return _from_folder(
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
    return _from_folder(
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


def _from_folder(
    data_cfg,
    root: Path,
    *,
    description: str,
    checksums: dict[str, str],
    license: str,
    card_extra: dict,
    notes: list[str],
    spool_dir: Path | None = None,
) -> LoadedSource:
    images_cfg = data_cfg.images
    # The params stage refuses such sizes; this guards the decode path for any other caller
    # (a hand-edited resolved file, a script) before a spool or a worker allocates them.
    check_image_sides(images_cfg.image_size, "data.images.image_size")
    scan = scan_image_folder(root, IMAGE_EXTENSIONS)
    selected = select_classes(scan.class_names, data_cfg.classes)
    files, ignored = _selected_files(root, scan, selected)
    spool, outcomes, channels = _decode_to_spool(files, images_cfg, spool_dir)
    skipped, decoded = _split_outcomes(files, outcomes)
    items = [Item(f.relative, f.class_name, f.pool, o.sha256, f.links_to) for f, o in decoded]
    duplicates = find_duplicates(items, remove=True)
    report = source_report(
        source=description,
        class_names=selected,
        image_files=len(files),
        skipped=skipped,
        ignored=ignored,
        ignored_extensions=scan.ignored_extensions,
        originals=_original_image_stats(decoded),
        duplicates=duplicates,
        notes=list(notes) + list(scan.notes),
        excluded=scan.excluded,
        max_label_conflict_fraction=data_cfg.max_label_conflict_fraction,
    )
    _refuse_label_conflicts(report)
    kept = _kept_files(root, decoded, duplicates.keep, skipped, len(files), report)
    pools = _pool_splits(kept, decoded, spool, channels, selected)
    if "train" not in pools:
        raise DataQualityError(f"{root}: no readable training images", report)
    listing = "".join(f"{f.relative}\t{f.class_name}\t{o.sha256}\n" for f, o in kept)
    checksums = {**checksums, "images": hashlib.sha256(listing.encode()).hexdigest()}
    loading = _image_loading(images_cfg, channels)
    return LoadedSource(
        train=pools["train"],
        test=pools.get("test"),
        class_names=selected,
        description=description,
        checksums=checksums,
        license=license,
        report=report,
        card_extra={**card_extra, "image_loading": loading, "presplit": scan.presplit},
    )


def _split_outcomes(
    files: list[ImageFile], outcomes: list[DecodeOutcome]
) -> tuple[list[dict], list[tuple[ImageFile, DecodeOutcome]]]:
    """({path, reason} of each skipped file, (file, outcome) of each decoded one)."""
    skipped = [
        {"path": f.relative, "reason": o.reason}
        for f, o in zip(files, outcomes, strict=True)
        if o.reason is not None
    ]
    # Outcomes carry no pixels here: decoded image number j lies at spool index j.
    decoded = [(f, o) for f, o in zip(files, outcomes, strict=True) if o.reason is None]
    return skipped, decoded


def _kept_files(
    root: Path,
    decoded: list[tuple[ImageFile, DecodeOutcome]],
    keep: np.ndarray,
    skipped: list[dict],
    image_files: int,
    report: dict,
) -> list[tuple[ImageFile, DecodeOutcome]]:
    """The decoded files the duplicate search keeps; DataQualityError when none is left."""
    kept = [pair for pair, keep_it in zip(decoded, keep, strict=True) if keep_it]
    if not kept:
        example = f" (e.g. {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise DataQualityError(
            f"{root}: none of the {image_files} image files could be decoded{example}", report
        )
    return kept


def _selected_files(
    root: Path, scan: FolderScan, selected: tuple[str, ...]
) -> tuple[list[ImageFile], dict[str, int]]:
    """(the scanned files of the selected classes, the ignored counts including the others)."""
    files = [f for f in scan.files if f.class_name in selected]
    ignored = dict(scan.ignored)
    if len(files) < len(scan.files):
        ignored["unselected_class"] = len(scan.files) - len(files)
    if not files:
        raise DataError(
            f"{root}: no image files in the class folders "
            f"(read: {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return files, ignored


def _original_image_stats(decoded: list[tuple[ImageFile, DecodeOutcome]]) -> dict:
    return image_stats(
        [o.width for _, o in decoded],
        [o.height for _, o in decoded],
        [o.mode for _, o in decoded],
        [o.format for _, o in decoded],
    )


def _refuse_label_conflicts(report: dict) -> None:
    conflict_problem = label_conflict_problem(report)
    if conflict_problem:
        report["problems"] = [conflict_problem]
        raise DataQualityError(
            f"{conflict_problem}; details in reports/data_quality.md", report
        )


def _pool_splits(
    kept: list[tuple[ImageFile, DecodeOutcome]],
    decoded: list[tuple[ImageFile, DecodeOutcome]],
    spool: Spool,
    channels: int,
    selected: tuple[str, ...],
) -> dict[str, Split]:
    """The train and test splits (whichever have images) of the ``kept`` decoded files, as
    views of the spool; ``decoded`` gives each file's spool index."""
    spool_index = {f.relative: j for j, (f, _) in enumerate(decoded)}
    pools = {}
    for pool in ("train", "test"):
        members = [(f, o) for f, o in kept if f.pool == pool]
        if members:
            pools[pool] = Split(
                spool.view(channels, [spool_index[f.relative] for f, _ in members]),
                np.array([selected.index(f.class_name) for f, _ in members], dtype=np.int32),
            )
    return pools


def _image_loading(images_cfg, channels: int) -> dict:
    return {
        "image_size": list(images_cfg.image_size),
        "channels": channels,
        # null: the channel count followed the decoded images (1 when all were grayscale).
        "channels_setting": images_cfg.channels,
        "crop_to_aspect_ratio": images_cfg.crop_to_aspect_ratio,
        "resample": "bilinear",
        "max_pixels": images_cfg.max_pixels,
    }


def _decode_to_spool(files, images_cfg, spool_dir) -> tuple[Spool, list[DecodeOutcome], int]:
    """Decode every file into a spool, keeping only the small facts of each in memory.

    Returns (spool, outcomes without pixels, channel count). With ``channels`` null each
    image is decoded with its own channels and the count follows the data: 1 when every
    decoded image was grayscale, else 3 with the gray ones replicated (exactly what an
    explicit 3 gives), a choice a single decode pass can only make at its end.
    """
    spool = Spool(tuple(images_cfg.image_size), spool_dir)
    outcomes = []
    try:
        for outcome in iter_decode_files(
            [f.path for f in files],
            tuple(images_cfg.image_size),
            images_cfg.channels,
            images_cfg.crop_to_aspect_ratio,
            images_cfg.max_pixels,
        ):
            if outcome.pixels is not None:
                spool.append(outcome.pixels)
                outcome = replace(outcome, pixels=None)
            outcomes.append(outcome)
        spool.finish()
    except BaseException:
        spool.close()
        raise
    channels = images_cfg.channels or (1 if spool.all_gray and spool.count else 3)
    return spool, outcomes, channels


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
        pools = counts_per_split(
            {"train": train_pool.labels, "test": test.labels}, loaded.class_names
        )
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
