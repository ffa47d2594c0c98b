"""Fixed-length uint8 image records: the on-disk format between prepare and the stages after it.

A split is a directory::

    shard-00000.bin  shard-00001.bin  ...  labels.npy  index.json

Each record is a 2-byte little-endian uint16 label followed by the H*W*C uint8 pixels
(row-major HWC). No headers and a fixed length, so a reader can seek straight to record
``i`` (the tf.data pipeline in :mod:`cnnpipe.core.shard_stream` does); shard ``k`` holds
records ``k*R .. k*R+R-1`` in the split's order. ``labels.npy`` repeats the labels so that
counting classes or drawing a subset never touches the pixels.

TensorFlow is imported only inside :meth:`ShardSet.dataset`: prepare and preprocess run
without it (its import costs seconds and most of a gigabyte).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError

FORMAT = "cnnpipe-uint8-records"
VERSION = 1
LABEL_BYTES = 2
MAX_LABEL = 2 ** (8 * LABEL_BYTES) - 1
# Tens of MB per shard: enough shards in a large split for the shuffled shard order to mix
# well, few enough files that opening them costs nothing, and one shard per 224x224 class
# folder chunk stays well below any file-size limit.
TARGET_SHARD_BYTES = 32 * 2**20
INDEX_FILE = "index.json"
PREFETCH_BATCHES = 2  # one batch ready while the model works on the other
LABELS_FILE = "labels.npy"


def record_bytes_for(image_shape: tuple[int, ...]) -> int:
    return LABEL_BYTES + int(np.prod(image_shape))


def default_records_per_shard(image_shape: tuple[int, ...]) -> int:
    return max(1, TARGET_SHARD_BYTES // record_bytes_for(image_shape))


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.bin"


class ShardWriteError(DataError):
    """Writing a split failed (a full disk, a read-only folder): one line, path and cause."""

    def __init__(self, path: Path | str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write {path}: {reason}")


def _os_error(path: Path | str, exc: OSError) -> ShardWriteError:
    return ShardWriteError(path, exc.strerror or str(exc))


class ShardWriter:
    """Write one split; it appears under ``directory`` only when the ``with`` block succeeds.

    Records go to a temporary sibling directory that is renamed into place at the end, so a
    failure, a full disk or a kill never leaves a half-written split under its real name.
    A temporary left by an earlier killed run is removed when the next writer starts.
    """

    def __init__(
        self,
        directory: str | Path,
        image_shape: tuple[int, int, int],
        records_per_shard: int | None = None,
    ):
        self.directory = Path(directory)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W, C), got {image_shape!r}")
        self.record_bytes = record_bytes_for(self.image_shape)
        self.records_per_shard = int(
            records_per_shard or default_records_per_shard(self.image_shape)
        )
        if self.records_per_shard < 1:
            raise ValueError("records_per_shard must be at least 1")
        self.count = 0
        self._labels: list[np.ndarray] = []
        self._shards: list[str] = []
        self._handle = None
        self._in_shard = 0
        self._tmp: Path | None = None

    def _temp_prefix(self) -> str:
        return f".{self.directory.name}.tmp-"

    def __enter__(self) -> "ShardWriter":
        parent = self.directory.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for stale in parent.glob(self._temp_prefix() + "*"):
                shutil.rmtree(stale, ignore_errors=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=self._temp_prefix(), dir=parent))
        except OSError as exc:
            raise _os_error(parent, exc) from None
        return self

    def add(self, image: np.ndarray, label: int) -> None:
        self.add_batch(np.asarray(image)[None], np.asarray([label]))

    def add_batch(self, images: np.ndarray, labels: np.ndarray) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"expected uint8 images shaped (k, {', '.join(map(str, self.image_shape))}), "
                f"got {images.dtype} {images.shape}"
            )
        if labels.shape != (len(images),):
            raise ValueError(f"expected {len(images)} labels, got shape {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() > MAX_LABEL):
            raise ValueError(f"labels must lie in 0..{MAX_LABEL}")
        records = np.empty((len(images), self.record_bytes), np.uint8)
        records[:, :LABEL_BYTES] = labels.astype("<u2").view(np.uint8).reshape(-1, LABEL_BYTES)
        records[:, LABEL_BYTES:] = images.reshape(len(images), -1)
        start = 0
        while start < len(records):
            if self._handle is None or self._in_shard == self.records_per_shard:
                self._next_shard()
            take = min(len(records) - start, self.records_per_shard - self._in_shard)
            self._write(records[start : start + take])
            self._in_shard += take
            start += take
        self._labels.append(labels.astype(np.int32))
        self.count += len(images)

    def _next_shard(self) -> None:
        self._close_shard()
        name = shard_name(len(self._shards))
        path = self._tmp / name
        try:
            self._handle = open(path, "wb")
        except OSError as exc:
            raise _os_error(path, exc) from None
        self._shards.append(name)
        self._in_shard = 0

    def _write(self, records: np.ndarray) -> None:
        try:
            self._handle.write(records.data)
        except OSError as exc:
            raise _os_error(self._handle.name, exc) from None

    def _close_shard(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.close()  # flushes: a full disk may first show here
            except OSError as exc:
                raise _os_error(handle.name, exc) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self._handle is not None:
                try:
                    self._handle.close()
                except OSError:
                    pass  # already failing; the temporary directory goes below
                self._handle = None
            if self._tmp is not None and self._tmp.exists():
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _finish(self) -> None:
        self._close_shard()
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int32)
        index = {
            "format": FORMAT,
            "version": VERSION,
            "image_shape": list(self.image_shape),
            "count": self.count,
            "records_per_shard": self.records_per_shard,
            "label_bytes": LABEL_BYTES,
            "record_bytes": self.record_bytes,
            "shards": list(self._shards),
        }
        try:
            np.save(self._tmp / LABELS_FILE, labels)
            (self._tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
            os.chmod(self._tmp, 0o755)  # mkdtemp makes 0700; outputs are meant to be shared
            # The old split moves aside first, so the real name never points at a mixture.
            old = None
            if self.directory.exists():
                old = Path(tempfile.mkdtemp(prefix=self._temp_prefix(), dir=self.directory.parent))
                os.replace(self.directory, old / "old")
            os.replace(self._tmp, self.directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise _os_error(self.directory, exc) from None


class ShardSet:
    """Read a split written by :class:`ShardWriter`: by index, in batches, or as tf.data."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.is_file():
            raise DataError(
                f"{self.directory} is not a prepared split (no {INDEX_FILE}); "
                "run the prepare stage (dvc repro)"
            )
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{index_path} is unreadable: {exc}") from None
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise DataError(
                f"{index_path}: format {index.get('format')!r} version {index.get('version')!r}, "
                f"expected {FORMAT!r} version {VERSION}; rerun the prepare stage"
            )
        self.index = index
        self.image_shape: tuple[int, int, int] = tuple(index["image_shape"])
        self.record_bytes = int(index["record_bytes"])
        self.records_per_shard = int(index["records_per_shard"])
        self.count = int(index["count"])
        self.shard_paths = [self.directory / name for name in index["shards"]]
        self.labels = np.load(self.directory / LABELS_FILE).astype(np.int32)
        consistent = self.record_bytes == record_bytes_for(self.image_shape)
        if len(self.labels) != self.count or not consistent:
            raise DataError(f"{self.directory}: index.json disagrees with its files; rerun prepare")
        self._fds: dict[int, int] = {}

    @classmethod
    def open(cls, directory: str | Path) -> "ShardSet":
        return cls(directory)

    def __len__(self) -> int:
        return self.count

    @property
    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _fd(self, shard: int) -> int:
        if shard not in self._fds:
            try:
                self._fds[shard] = os.open(self.shard_paths[shard], os.O_RDONLY)
            except OSError as exc:
                raise DataError(f"cannot read {self.shard_paths[shard]}: {exc.strerror}") from None
        return self._fds[shard]

    def _read_span(self, start: int, stop: int, out: memoryview) -> None:
        """Records start..stop-1 (may cross shards) into ``out``; plain reads, no memory map,
        so the pages stay in the page cache and out of this process's resident memory."""
        position = 0
        while start < stop:
            shard, offset = divmod(start, self.records_per_shard)
            take = min(stop - start, self.records_per_shard - offset)
            size = take * self.record_bytes
            chunk = os.pread(self._fd(shard), size, offset * self.record_bytes)
            if len(chunk) != size:
                raise DataError(f"{self.shard_paths[shard]} is truncated; rerun the prepare stage")
            out[position : position + size] = chunk
            position += size
            start += take

    def _records_to_images(self, records: np.ndarray) -> np.ndarray:
        return records[:, LABEL_BYTES:].reshape(len(records), *self.image_shape)

    def gather_records(self, indices: np.ndarray) -> np.ndarray:
        """uint8 (k, record_bytes) records at int64 ``indices`` (in range), in that order: one
        read for a run of consecutive records, else one ``preadv`` straight into each row."""
        records = np.empty((len(indices), self.record_bytes), np.uint8)
        view = memoryview(records).cast("B")
        if len(indices) and (np.diff(indices) == 1).all():
            self._read_span(int(indices[0]), int(indices[-1]) + 1, view)
            return records
        size = self.record_bytes
        shards, offsets = np.divmod(indices, self.records_per_shard)
        for row, (shard, offset) in enumerate(zip(shards.tolist(), (offsets * size).tolist())):
            if os.preadv(self._fd(shard), [view[row * size : (row + 1) * size]], offset) != size:
                raise DataError(f"{self.shard_paths[shard]} is truncated; rerun the prepare stage")
        return records

    def read(self, indices) -> np.ndarray:
        """uint8 (k, H, W, C) images of the records at ``indices``, in the order given."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.count):
            raise IndexError(f"record index out of range 0..{self.count - 1}")
        return np.ascontiguousarray(self._records_to_images(self.gather_records(indices)))

    def iter_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(uint8 images (B, H, W, C), int32 labels (B,)) in record order; memory ~ one batch."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            records = np.empty((stop - start, self.record_bytes), np.uint8)
            self._read_span(start, stop, memoryview(records).cast("B"))
            yield self._records_to_images(records), self.labels[start:stop]

    def dataset(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_mb: int = 256,
        subset=None,
        with_index: bool = False,
        one_hot: int | None = None,
    ):
        """A ``tf.data.Dataset`` of (uint8 images (B, H, W, C), int32 labels (B,)), and the
        int64 record indices (B,) as a third element when ``with_index``. With ``one_hot``
        (a class count) the labels come as float32 one-hot rows (B, one_hot), converted in
        the same step that decodes the batch: a separate map would add a stage and a thread.

        Shuffling mixes at two levels: the shard order (reshuffled each epoch) and a buffer
        whose element count is what ``shuffle_buffer_mb`` of records would hold; it holds
        their 8-byte indices, and each batch's records are read in one step. ``subset`` keeps
        only those record indices (before shuffling). The same seed gives the same batches in
        the same order.
        """
        import tensorflow as tf

        from cnnpipe.core import shard_stream

        return shard_stream.batches(
            tf, self, batch_size, shuffle=shuffle, seed=seed, shuffle_buffer_mb=shuffle_buffer_mb,
            subset=self._checked_subset(subset), with_index=with_index, one_hot=one_hot,
        )

    def _checked_subset(self, subset) -> np.ndarray | None:
        """``subset`` as int64 record indices, or None when it names every record."""
        if subset is None:
            return None
        subset = np.asarray(subset, dtype=np.int64).reshape(-1)
        if len(subset) and (subset.min() < 0 or subset.max() >= self.count):
            raise IndexError(f"subset index out of range 0..{self.count - 1}")
        if len(np.unique(subset)) == self.count:
            return None  # every record: no filter to pay for
        return subset


def write_arrays(
    directory: str | Path, images: np.ndarray, labels: np.ndarray, chunk: int | None = None
) -> ShardSet:
    """Write a split from an array, or anything that slices into (k, H, W, C) uint8 blocks (a
    lazy view of spooled images), a shard's worth at a time; returns its reader."""
    shape = tuple(images.shape[1:])
    chunk = chunk or max(1, TARGET_SHARD_BYTES // record_bytes_for(shape))
    labels = np.asarray(labels)
    with ShardWriter(directory, shape) as writer:
        for start in range(0, len(labels), chunk):
            block = np.asarray(images[start : start + chunk], dtype=np.uint8)
            writer.add_batch(block, labels[start : start + chunk])
    return ShardSet(directory)
