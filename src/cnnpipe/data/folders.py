"""Image folders (one sub-folder per class, optionally under train/ and test/) into pixels.

Layout, as keras.utils.image_dataset_from_directory expects it::

    root/cat/001.jpg           or    root/train/cat/001.jpg
    root/dog/nested/002.png          root/test/cat/104.jpg

Class folders are searched recursively. Hidden files and folders, files with other
extensions and files lying outside a class folder are left out silently but counted, so
the quality report can say what was not used.

Links and special files are never followed blindly: a file link is read only when its target
lies inside the scanned root and is a regular file; links to folders are not followed (DVC,
which hashes the folder as the prepare stage's dependency, does not follow them either, so
`dvc status` could not see what they add), nor are FIFOs, devices and sockets read. Each is
listed in the report with the reason. A file reachable under two classes through a link is
caught later as a label conflict (its bytes are equal).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnnpipe.data.decode import (
    MAX_PIXELS,
    ImageDecodeError,
    decode_image_with_info,
    file_kind,
    read_image_bytes,
)
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
    links_to: str | None = None  # for a file link: its target, relative to the root


@dataclass(frozen=True)
class FolderScan:
    root: Path
    files: tuple[ImageFile, ...]  # pool "train" first, then "test"; sorted paths within each
    class_names: tuple[str, ...]  # sorted class folder names
    presplit: bool  # root held train/ (and test/) folders
    ignored: dict[str, int] = field(default_factory=dict)  # reason -> file count
    ignored_extensions: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    # Links not followed and special files not read: {"path", "reason"}, in path order.
    excluded: tuple[dict, ...] = ()


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


# Entries that are not read, by the key the report counts them under.
NOT_READ = {
    "special_file": "{detail}: not read",
    "link_outside_folder": "link to {detail}, outside the image folder: not followed",
    "folder_link": (
        "link to the folder {detail}: not followed (DVC does not hash through folder links, "
        "so `dvc status` could not see what it adds)"
    ),
    "directory_loop": "link to the enclosing folder {detail} (a directory loop): not followed",
    "broken_link": "broken link (to {detail})",
}


class _ScanLog:
    """What the scan left out: counts by reason, and the links and special files by name."""

    def __init__(self, root: Path):
        self.root = root
        self.counts: dict[str, int] = {}
        self.excluded: list[dict] = []

    def ignore(self, reason: str, amount: int = 1) -> None:
        if amount:
            self.counts[reason] = self.counts.get(reason, 0) + amount

    def exclude(self, path: Path, key: str, detail: str) -> None:
        self.ignore(key)
        reason = NOT_READ[key].format(detail=detail)
        self.excluded.append({"path": path.relative_to(self.root).as_posix(), "reason": reason})


def scan_image_folder(root: Path, extensions: set[str]) -> FolderScan:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} not found (set data.image_folder.path)")
    log = _ScanLog(root)
    root_real = os.path.realpath(root)
    top_dirs, top_files = _list_folder(root, root_real, log)
    lowered = {d.name.lower(): d.name for d in top_dirs}
    presplit = "train" in lowered and set(lowered) <= set(SPLIT_FOLDERS)
    notes = []
    if presplit:
        log.ignore("outside_class_folders", len(top_files))  # beside train/ and test/
        pool_roots = _split_pool_roots(lowered, notes)
    else:
        pool_roots = [("", "train")]
    found = _PoolFiles()
    for folder_name, pool in pool_roots:
        if folder_name:
            class_dirs, loose = _list_folder(root / folder_name, root_real, log)
        else:
            class_dirs, loose = top_dirs, top_files
        log.ignore("outside_class_folders", len(loose))
        for class_dir in class_dirs:
            found.add_class_folder(class_dir, pool, root, root_real, extensions, log)
    _check_pool_classes(root, found)
    if presplit and not found.classes_by_pool["test"]:
        notes.append("no test/ folder: a stratified test split is drawn (data.test_fraction)")
    pool_rank = {"train": 0, "test": 1}
    found.files.sort(key=lambda f: (pool_rank[f.pool], f.relative))
    return FolderScan(
        root=root,
        files=tuple(found.files),
        class_names=tuple(sorted(found.class_names)),
        presplit=presplit and bool(found.classes_by_pool["test"]),
        ignored=log.counts,
        ignored_extensions=dict(sorted(found.extension_counts.items())),
        notes=tuple(notes),
        excluded=tuple(sorted(log.excluded, key=lambda e: e["path"])),
    )


def _split_pool_roots(lowered: dict[str, str], notes: list[str]) -> list[tuple[str, str]]:
    """(folder name, pool) for each of train/, test/, val/ ... the root holds; notes a merge
    of val/ folders into the training pool."""
    pool_roots = [(lowered[name], SPLIT_FOLDERS[name]) for name in sorted(lowered)]
    merged = [lowered[n] for n in ("val", "validation") if n in lowered]
    if merged:
        notes.append(
            f"{', '.join(merged)}/ merged into the training pool: the pipeline draws its own "
            "stratified validation split (data.val_fraction)"
        )
    return pool_roots


@dataclass
class _PoolFiles:
    """What the class folders of every pool hold, gathered in scan order."""

    files: list[ImageFile] = field(default_factory=list)
    class_names: set[str] = field(default_factory=set)
    classes_by_pool: dict[str, set[str]] = field(
        default_factory=lambda: {"train": set(), "test": set()}
    )
    extension_counts: dict[str, int] = field(default_factory=dict)

    def add_class_folder(
        self,
        class_dir: Path,
        pool: str,
        root: Path,
        root_real: str,
        extensions: set[str],
        log: _ScanLog,
    ) -> None:
        self.class_names.add(class_dir.name)
        self.classes_by_pool[pool].add(class_dir.name)
        for path, links_to in _walk_files(class_dir, root_real, log):
            suffix = path.suffix.lower()
            if suffix not in extensions:
                log.ignore("non_image_extension")
                key = suffix or "(none)"
                self.extension_counts[key] = self.extension_counts.get(key, 0) + 1
                continue
            relative = path.relative_to(root).as_posix()
            self.files.append(ImageFile(path, relative, class_dir.name, pool, links_to))


def _check_pool_classes(root: Path, found: _PoolFiles) -> None:
    unknown_in_test = found.classes_by_pool["test"] - found.classes_by_pool["train"]
    if unknown_in_test:
        raise DataError(
            f"{root}: test/ has class folder(s) missing from train/: "
            f"{', '.join(sorted(unknown_in_test))}"
        )
    if not found.class_names:
        raise DataError(f"{root} holds no class sub-folders (expected {root}/<class>/<image>)")


def _count_all_files(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _classify(path: Path, root_real: str) -> tuple[str, str | None]:
    """("dir", None), ("file", link target relative to the root or None), or a NOT_READ key
    and the detail its message names. Only stat calls: nothing is opened."""
    info = os.lstat(path)
    if not stat.S_ISLNK(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            return "dir", None
        if stat.S_ISREG(info.st_mode):
            return "file", None
        return "special_file", file_kind(info.st_mode)
    target = os.path.realpath(path)
    try:
        info = os.stat(path)
    except OSError:  # dangling, or a chain of links that loops
        return "broken_link", os.readlink(path)
    inside = _inside(target, root_real)
    shown = os.path.relpath(target, root_real) if inside else target
    if stat.S_ISDIR(info.st_mode):
        if _inside(os.path.realpath(path.parent), target):
            return "directory_loop", shown
        return ("folder_link" if inside else "link_outside_folder"), shown
    if not inside:
        kind = "" if stat.S_ISREG(info.st_mode) else f" ({file_kind(info.st_mode)})"
        return "link_outside_folder", shown + kind
    if not stat.S_ISREG(info.st_mode):
        return "special_file", f"link to {file_kind(info.st_mode)}"
    return "file", Path(shown).as_posix()


def _list_folder(
    folder: Path, root_real: str, log: _ScanLog
) -> tuple[list[Path], list[tuple[Path, str | None]]]:
    """(real sub-folders, readable files with their link target) directly in ``folder``,
    sorted by name; hidden entries are counted, links and special files logged."""
    folders, files = [], []
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if _is_hidden(name):
            real_folder = path.is_dir() and not path.is_symlink()
            log.ignore("hidden", _count_all_files(path) if real_folder else 1)
            continue
        kind, detail = _classify(path, root_real)
        if kind == "dir":
            folders.append(path)
        elif kind == "file":
            files.append((path, detail))
        else:
            log.exclude(path, kind, detail)
    return folders, files


def _walk_files(folder: Path, root_real: str, log: _ScanLog) -> list[tuple[Path, str | None]]:
    """Readable files below ``folder`` with their link targets, sorted by path. Only real
    folders are entered, so no link can send the walk round a loop."""
    found = []
    pending = [folder]
    while pending:
        sub_folders, files = _list_folder(pending.pop(), root_real, log)
        found.extend(files)
        pending.extend(sub_folders)
    return sorted(found)


def find_special_files(folder: Path) -> list[tuple[str, str]]:
    """(path, what it is) for every FIFO, device or socket DVC would try to read when it hashes
    ``folder``: DVC reads files and file links (hidden ones too), not folder links, and a read
    of /dev/zero or of a FIFO without a writer never ends."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} not found")
    found = []
    for current, _, names in os.walk(folder):
        for name in sorted(names):
            path = Path(current) / name
            try:
                mode = os.stat(path).st_mode
            except OSError:  # a broken link: DVC reports it itself
                continue
            if not stat.S_ISREG(mode):
                link = f"link to {os.path.realpath(path)}, " if path.is_symlink() else ""
                found.append((path.as_posix(), link + file_kind(mode)))
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
        content = read_image_bytes(path, max_pixels)
    except ImageDecodeError as exc:
        return DecodeOutcome(sha256=None, reason=exc.reason)
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
