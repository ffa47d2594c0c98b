"""Image folders (one sub-folder per class, optionally under train/ and test/) into pixels.

Layout, as keras.utils.image_dataset_from_directory expects it::

    root/cat/001.jpg           or    root/train/cat/001.jpg
    root/dog/nested/002.png          root/test/cat/104.jpg

Class folders are searched recursively. Hidden files and folders, files with other
extensions and files lying outside a class folder are left out silently but counted, so
the quality report can say what was not used.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnnpipe.data.decode import MAX_PIXELS, ImageDecodeError, decode_image_with_info
from cnnpipe.core.errors import DataError

# Starting worker processes costs about half a second of CPU each; below this many files
# decoding in the stage's own process is quicker.
MIN_FILES_FOR_WORKERS = 200

SPLIT_FOLDERS = {"train": "train", "test": "test", "val": "train", "validation": "train"}


@dataclass(frozen=True)
class ImageFile:
    path: Path
    relative: str  # POSIX path relative to the scanned root, for reports
    class_name: str
    pool: str  # "train" or "test": which split the folder layout puts it in


@dataclass(frozen=True)
class FolderScan:
    root: Path
    files: tuple[ImageFile, ...]  # pool "train" first, then "test"; sorted paths within each
    class_names: tuple[str, ...]  # sorted class folder names
    presplit: bool  # root held train/ (and test/) folders
    ignored: dict[str, int] = field(default_factory=dict)  # reason -> file count
    ignored_extensions: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecodeOutcome:
    """What became of one file: pixels and facts about the original, or why it was skipped."""

    sha256: str | None
    pixels: np.ndarray | None = None  # (H, W, C) uint8 at the common size
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    reason: str | None = None  # set when the file was skipped


def _is_hidden(name: str) -> bool:
    # "__MACOSX" holds resource forks that macOS's Archive Utility adds to every zip.
    return name.startswith(".") or name == "__MACOSX"


def scan_image_folder(root: Path, extensions: set[str]) -> FolderScan:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} not found (set data.image_folder.path)")
    top_dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name))
    lowered = {name.lower(): name for name in top_dirs}
    presplit = "train" in lowered and set(lowered) <= set(SPLIT_FOLDERS)
    counts: dict[str, int] = {}
    extension_counts: dict[str, int] = {}
    notes = []

    def ignore(reason: str, amount: int = 1) -> None:
        if amount:
            counts[reason] = counts.get(reason, 0) + amount

    files: list[ImageFile] = []
    if presplit:
        ignore("outside_class_folders", _count_visible_files(root))  # beside train/ and test/
        pool_roots = [(lowered[name], SPLIT_FOLDERS[name]) for name in sorted(lowered)]
        merged = [lowered[n] for n in ("val", "validation") if n in lowered]
        if merged:
            notes.append(
                f"{', '.join(merged)}/ merged into the training pool: the pipeline draws its own "
                "stratified validation split (data.val_fraction)"
            )
    else:
        pool_roots = [("", "train")]
    class_names: set[str] = set()
    classes_by_pool: dict[str, set[str]] = {"train": set(), "test": set()}
    for folder_name, pool in pool_roots:
        pool_root = root / folder_name if folder_name else root
        ignore("outside_class_folders", _count_visible_files(pool_root))
        for class_dir in sorted(p for p in pool_root.iterdir() if p.is_dir()):
            if _is_hidden(class_dir.name):
                ignore("hidden", _count_all_files(class_dir))
                continue
            class_names.add(class_dir.name)
            classes_by_pool[pool].add(class_dir.name)
            for path in _walk_files(class_dir, ignore):
                suffix = path.suffix.lower()
                if suffix not in extensions:
                    ignore("non_image_extension")
                    key = suffix or "(none)"
                    extension_counts[key] = extension_counts.get(key, 0) + 1
                    continue
                files.append(
                    ImageFile(path, path.relative_to(root).as_posix(), class_dir.name, pool)
                )
    unknown_in_test = classes_by_pool["test"] - classes_by_pool["train"]
    if unknown_in_test:
        raise DataError(
            f"{root}: test/ has class folder(s) missing from train/: "
            f"{', '.join(sorted(unknown_in_test))}"
        )
    if not class_names:
        raise DataError(f"{root} holds no class sub-folders (expected {root}/<class>/<image>)")
    if presplit and not classes_by_pool["test"]:
        notes.append("no test/ folder: a stratified test split is drawn (data.test_fraction)")
    pool_rank = {"train": 0, "test": 1}
    files.sort(key=lambda f: (pool_rank[f.pool], f.relative))
    return FolderScan(
        root=root,
        files=tuple(files),
        class_names=tuple(sorted(class_names)),
        presplit=presplit and bool(classes_by_pool["test"]),
        ignored=counts,
        ignored_extensions=dict(sorted(extension_counts.items())),
        notes=tuple(notes),
    )


def _count_visible_files(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and not _is_hidden(p.name))


def _count_all_files(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def _walk_files(folder: Path, ignore) -> list[Path]:
    """Visible files below ``folder``, sorted; symlinked folders followed once (no cycles)."""
    found = []
    seen_dirs = set()
    for current, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        hidden_dirs = [d for d in dirnames if _is_hidden(d)]
        for name in hidden_dirs:
            ignore("hidden", _count_all_files(Path(current) / name))
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in filenames:
            if _is_hidden(name):
                ignore("hidden")
            else:
                found.append(Path(current) / name)
    return sorted(found)


def fit_to_size(
    pixels: np.ndarray, image_size: tuple[int, int], crop_to_aspect_ratio: bool = False
) -> np.ndarray:
    """Resize (H, W, C) uint8 pixels to ``image_size`` = (height, width).

    Stretching is the keras image_dataset_from_directory default; cropping keeps the aspect
    ratio by cutting the centre. Pillow's bilinear filter widens with the scale factor, so
    large photos are averaged down rather than aliased.
    """
    height, width = image_size
    if pixels.shape[:2] == (height, width):
        return pixels
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    if crop_to_aspect_ratio:
        resized = ImageOps.fit(image, (width, height), Image.Resampling.BILINEAR)
    else:
        resized = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(resized)
    return array[..., None] if array.ndim == 2 else array


def decode_file(
    path: Path,
    image_size: tuple[int, int],
    channels: int | None,
    crop_to_aspect_ratio: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> DecodeOutcome:
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        return DecodeOutcome(sha256=None, reason=f"cannot read ({exc.strerror or exc})")
    digest = hashlib.sha256(content).hexdigest()
    try:
        decoded = decode_image_with_info(content, channels=channels, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return DecodeOutcome(sha256=digest, reason=exc.reason)
    return DecodeOutcome(
        sha256=digest,
        pixels=fit_to_size(decoded.pixels, image_size, crop_to_aspect_ratio),
        width=decoded.width,
        height=decoded.height,
        mode=decoded.mode,
        format=decoded.format,
    )


def iter_decode_files(
    paths: list[Path],
    image_size: tuple[int, int],
    channels: int | None,
    crop_to_aspect_ratio: bool = False,
    max_pixels: int = MAX_PIXELS,
    workers: int = 0,
    min_files_for_workers: int = MIN_FILES_FOR_WORKERS,
):
    """Decode in order, on ``workers`` processes (0 = one per usable CPU core), yielding one
    outcome per path. ``channels`` None keeps each file's own (1 gray, 3 colour).

    Only a few chunks of files are in flight at a time, so memory stays bounded however many
    files there are (``Executor.map`` would queue every result ahead of a slow consumer).

    Processes, not threads: measured on 1000 JPEGs, two threads ran no faster than one
    (Pillow holds the GIL while it decodes), two processes nearly twice as fast. Workers are
    spawned, not forked: the stage may have imported TensorFlow, and forking a process that
    runs TensorFlow's threads can deadlock the child. A worker also keeps a decoder crash on
    a hostile file from taking the stage down with a bare segfault.
    """
    workers = workers or _usable_cores()
    task = _DecodeTask(tuple(image_size), channels, crop_to_aspect_ratio, max_pixels)
    if workers == 1 or len(paths) < max(2, min_files_for_workers):
        for path in paths:
            yield task(path)
        return
    chunksize = max(1, min(32, len(paths) // (workers * 8)))
    chunks = [paths[i : i + chunksize] for i in range(0, len(paths), chunksize)]
    in_flight_limit = 2 * workers  # keeps every worker busy while the consumer writes
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending = deque()
            next_chunk = 0
            while next_chunk < len(chunks) or pending:
                while next_chunk < len(chunks) and len(pending) < in_flight_limit:
                    pending.append(pool.submit(task.many, chunks[next_chunk]))
                    next_chunk += 1
                yield from pending.popleft().result()
    except BrokenProcessPool:
        raise DataError(
            "an image decoder process crashed (a hostile or badly broken file?); "
            "rerun with fewer files to find it"
        ) from None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _DecodeTask:
    image_size: tuple[int, int]
    channels: int | None
    crop_to_aspect_ratio: bool
    max_pixels: int

    def __call__(self, path: Path) -> DecodeOutcome:
        return decode_file(
            path, self.image_size, self.channels, self.crop_to_aspect_ratio, self.max_pixels
        )

    def many(self, paths: list[Path]) -> list[DecodeOutcome]:
        return [self(path) for path in paths]
