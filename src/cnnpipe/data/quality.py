"""The data-quality report: what was read, skipped and duplicated, and how classes balance.

Pure functions over plain records, so every count can be checked without touching a disk.
The report is a JSON-ready dict; :func:`render_markdown` turns it into the page a person
reads, :func:`class_balance_rows` into the table DVC draws as a bar chart.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from cnnpipe.core.errors import DataError
# The page a person reads; imported here so callers keep one name for the report's pieces.
from cnnpipe.data.quality_markdown import SPLIT_ORDER, render_markdown  # noqa: F401

# Long lists stay readable in the Markdown page; the JSON keeps these many entries too.
MAX_LISTED = 200
MAX_SIZES_LISTED = 20


class DataQualityError(DataError):
    """A quality threshold is violated; ``report`` holds the full report so it can be written."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Item:
    """One decoded image, as the duplicate search sees it."""

    path: str  # relative file path, or "<split>[<index>]" for array sources
    class_name: str
    split: str
    sha256: str
    links_to: str | None = None  # the file a link path leads to, relative to the root


@dataclass(frozen=True)
class Duplicates:
    keep: np.ndarray  # bool per item: False for a copy that is removed
    summary: dict
    groups: list[dict]  # copies under one class: the copy kept and the later ones
    conflicts: list[dict]  # copies under two or more classes: every file of each
    removing: bool = False  # whether copies (and every copy of a conflict) were dropped


CONFLICT_POLICY_REMOVE = (
    "every copy removed, from every split: the folders disagree on the label, so none is "
    "trusted (never the class that sorts first)"
)
CONFLICT_POLICY_REPORT = "reported only: the official labels are kept as published"


def find_duplicates(items: list[Item], remove: bool) -> Duplicates:
    """Exact duplicates by content hash.

    Copies under one class: the first copy (train < val < test, then path) is kept. With
    ``remove`` every later copy is dropped: a test image equal to a training image would
    measure memory, not generalisation, and two equal images in the training pool could land
    on both sides of the train/val split that is drawn afterwards.

    Copies under two or more classes (a link or a copy filed in the wrong folder) are a label
    conflict: with ``remove`` every copy is dropped, whichever split or class it is in.
    """
    keep = np.ones(len(items), dtype=bool)
    within = across = conflict_images = 0
    groups, conflicts = [], []
    for digest, members in _members_by_hash(items).items():
        if len(members) < 2:
            continue
        first = items[members[0]]
        for index in members[1:]:
            if items[index].split == first.split:
                within += 1
            else:
                across += 1
        labels = sorted({items[i].class_name for i in members})
        if len(labels) > 1:
            conflict_images += len(members)
            if remove:
                keep[members] = False
            conflicts.append(_conflict_entry(digest, labels, [items[i] for i in members]))
            continue
        if remove:
            keep[members[1:]] = False
        groups.append(_copies_entry(digest, labels, [items[i] for i in members]))
    summary = _duplicate_summary(groups, conflicts, within, across, conflict_images, keep, remove)
    return Duplicates(
        keep=keep,
        summary=summary,
        groups=groups,
        conflicts=conflicts,
        removing=remove,
    )


def _conflict_entry(digest: str, labels: list[str], copies: list[Item]) -> dict:
    return {"sha256": digest, "classes": labels, "files": [_describe(c) for c in copies]}


def _copies_entry(digest: str, labels: list[str], copies: list[Item]) -> dict:
    """A group of copies under one class: the first (kept) and the later ones."""
    return {
        "sha256": digest,
        "kept": _describe(copies[0]),
        "copies": [_describe(c) for c in copies[1:]],
        "classes": labels,
    }


def _members_by_hash(items: list[Item]) -> dict[str, list[int]]:
    """Item indices per content hash, each list in keep order (train < val < test, then path)."""
    rank = {name: i for i, name in enumerate(SPLIT_ORDER)}
    order = sorted(range(len(items)), key=lambda i: (rank.get(items[i].split, 99), items[i].path))
    by_hash: dict[str, list[int]] = {}
    for index in order:
        by_hash.setdefault(items[index].sha256, []).append(index)
    return by_hash


def _duplicate_summary(
    groups: list[dict],
    conflicts: list[dict],
    within: int,
    across: int,
    conflict_images: int,
    keep: np.ndarray,
    remove: bool,
) -> dict:
    return {
        "groups": len(groups) + len(conflicts),
        "copies": within + across,
        "within_split": within,
        "across_splits": across,
        "label_conflicts": len(conflicts),
        "conflict_images": conflict_images,
        "removed": int((~keep).sum()),
        "policy": (
            "later copies removed (train < val < test, then path order); "
            "copies under different classes all removed"
            if remove
            else "reported only: the official split is kept as published"
        ),
    }


def _describe(item: Item) -> dict:
    described = {"path": item.path, "class": item.class_name, "split": item.split}
    if item.links_to is not None:
        described["links_to"] = item.links_to
    return described


# Conflicting images always allowed, whatever the folder's size: one misfiled image and its
# copy. A share alone cannot tell that slip from a misfiled folder in a small set (2 of 181
# images is 1.1%), and both copies are removed either way.
MIN_ALLOWED_CONFLICTS = 2


def allowed_conflicts(max_fraction: float, decoded: int) -> int:
    """Images in label conflicts that prepare accepts (and removes): max(2, fraction x
    decoded), rounded down. The tolerance keeps 0.07 x 100 at 7 despite binary floats."""
    return max(MIN_ALLOWED_CONFLICTS, math.floor(max_fraction * decoded + 1e-9))


def label_conflict_problem(report: dict) -> str | None:
    """The one-line refusal when more decoded images are in label conflicts than allowed."""
    conflicts = report["label_conflicts"]
    limit = conflicts["max_fraction"]
    if limit is None or conflicts["images"] <= conflicts["max_images"]:
        return None
    example = " = ".join(
        f["path"] + (f" (link to {f['links_to']})" if "links_to" in f else "")
        for f in conflicts["details"][0]["files"][:2]
    )
    return (
        f"{conflicts['images']} of {report['files']['decoded']} decoded images "
        f"({100 * conflicts['fraction']:.1f}%) are filed under two or more classes (e.g. "
        f"{example}), more than the {conflicts['max_images']} that "
        f"data.max_label_conflict_fraction={limit} allows (that share, and never fewer than "
        f"{MIN_ALLOWED_CONFLICTS}): a folder linked or copied into the wrong class?"
    )


def image_stats(
    widths: list[int], heights: list[int], modes: list[str], formats: list[str]
) -> dict:
    """Distribution of the original files' sizes, Pillow modes and formats."""
    sizes = Counter(f"{w}x{h}" for w, h in zip(widths, heights, strict=True))
    listed = dict(sizes.most_common(MAX_SIZES_LISTED))
    other = sum(sizes.values()) - sum(listed.values())
    if other:
        listed["other"] = other
    stats = {
        "count": len(widths),
        "sizes": listed,
        "distinct_sizes": len(sizes),
        "modes": dict(Counter(modes).most_common()),
        "formats": dict(Counter(formats).most_common()),
    }
    if widths:
        stats["width"] = {"min": int(min(widths)), "max": int(max(widths))}
        stats["height"] = {"min": int(min(heights)), "max": int(max(heights))}
    return stats


def source_report(
    *,
    source: str,
    class_names: tuple[str, ...],
    image_files: int,
    skipped: list[dict],
    ignored: dict[str, int],
    ignored_extensions: dict[str, int],
    originals: dict,
    duplicates: Duplicates,
    notes: list[str],
    excluded: tuple[dict, ...] | list[dict] = (),
    max_label_conflict_fraction: float | None = None,
) -> dict:
    """Everything known once the source is read, before the splits are drawn.

    ``max_label_conflict_fraction`` None: conflicts are reported, never a reason to stop
    (array sources, whose official labels are kept as published).
    """
    decoded = image_files - len(skipped)
    conflict_images = duplicates.summary["conflict_images"]
    return {
        "source": source,
        "class_names": list(class_names),
        "files": {
            "image_files": image_files,
            "decoded": decoded,
            "skipped": len(skipped),
            "unreadable_fraction": round(len(skipped) / image_files, 6) if image_files else 0.0,
            "ignored": dict(sorted(ignored.items())),
            "ignored_extensions": ignored_extensions,
        },
        "skipped": skipped[:MAX_LISTED],
        "original_images": originals,
        "duplicates": {
            **duplicates.summary,
            "details": duplicates.groups[:MAX_LISTED],
            "details_not_listed": max(0, len(duplicates.groups) - MAX_LISTED),
        },
        "label_conflicts": {
            "groups": len(duplicates.conflicts),
            "images": conflict_images,
            "fraction": round(conflict_images / decoded, 6) if decoded else 0.0,
            "max_fraction": max_label_conflict_fraction,
            "max_images": (
                None if max_label_conflict_fraction is None
                else allowed_conflicts(max_label_conflict_fraction, decoded)
            ),
            "removed": conflict_images if duplicates.removing else 0,
            "policy": CONFLICT_POLICY_REMOVE if duplicates.removing else CONFLICT_POLICY_REPORT,
            "details": duplicates.conflicts[:MAX_LISTED],
            "details_not_listed": max(0, len(duplicates.conflicts) - MAX_LISTED),
        },
        "not_read": {"entries": len(excluded), "details": list(excluded)[:MAX_LISTED]},
        "notes": list(notes),
    }


def counts_per_split(
    labels_by_split: dict[str, np.ndarray], class_names: tuple[str, ...]
) -> dict[str, dict[str, int]]:
    return {
        split: {
            name: int(n)
            for name, n in zip(
                class_names, np.bincount(labels, minlength=len(class_names)), strict=True
            )
        }
        for split, labels in labels_by_split.items()
    }


def class_balance_rows(counts: dict[str, dict[str, int]]) -> list[dict]:
    """Rows {"class", "split", "count"}: the long format DVC's bar templates plot."""
    return [
        {"class": name, "split": split, "count": n}
        for split in SPLIT_ORDER
        if split in counts
        for name, n in counts[split].items()
    ]


def complete_report(
    report: dict,
    counts: dict[str, dict[str, int]],
    min_images_per_class: int,
    max_unreadable_fraction: float,
) -> dict:
    """The report with final per-split counts, the balance table and threshold verdicts."""
    class_names = report["class_names"]
    totals = {name: sum(counts[s].get(name, 0) for s in counts) for name in class_names}
    complete = {
        **report,
        "counts": counts,
        "totals_per_class": totals,
        "class_balance": class_balance_rows(counts),
        "thresholds": {
            "min_images_per_class": min_images_per_class,
            "max_unreadable_fraction": max_unreadable_fraction,
        },
    }
    complete["problems"] = quality_problems(complete)
    return complete


def quality_problems(report: dict) -> list[str]:
    problems = []
    files = report["files"]
    limit = report["thresholds"]["max_unreadable_fraction"]
    if files["unreadable_fraction"] > limit:
        example = report["skipped"][0] if report["skipped"] else None
        detail = f" (e.g. {example['path']}: {example['reason']})" if example else ""
        problems.append(
            f"{files['skipped']} of {files['image_files']} image files "
            f"({100 * files['unreadable_fraction']:.1f}%) could not be decoded, more than "
            f"data.max_unreadable_fraction={limit} allows{detail}"
        )
    minimum = report["thresholds"]["min_images_per_class"]
    small = [f"{n} ({c})" for n, c in report["totals_per_class"].items() if c < minimum]
    if small:
        problems.append(
            f"class(es) with fewer than data.min_images_per_class={minimum} usable images: "
            + ", ".join(small)
        )
    train = report["counts"].get("train", {})
    empty = [n for n in report["class_names"] if train.get(n, 0) == 0]
    if train and empty and not small:
        problems.append(f"class(es) without training images: {', '.join(empty)}")
    return problems


def enforce_quality(report: dict) -> None:
    """DataQualityError (one line, all problems) when the completed report lists problems."""
    if report.get("problems"):
        raise DataQualityError(
            "; ".join(report["problems"]) + "; details in reports/data_quality.md", report
        )
