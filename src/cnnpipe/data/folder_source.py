"""An image folder (or an extracted archive) as a training pool: scanned, decoded into a
spool, deduplicated, label conflicts removed, every skip recorded for the quality report."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.data.bounds import check_image_sides
from cnnpipe.data.decode import IMAGE_EXTENSIONS
from cnnpipe.data.folders import (
    DecodeOutcome,
    FolderScan,
    ImageFile,
    iter_decode_files,
    scan_image_folder,
)
from cnnpipe.data.loaded import LoadedSource, select_classes
from cnnpipe.data.prepare import Split
from cnnpipe.data.quality import (
    DataQualityError,
    Item,
    find_duplicates,
    image_stats,
    label_conflict_problem,
    source_report,
)
from cnnpipe.data.spool import Spool


def from_folder(
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
