"""Decoded images parked on disk while prepare decides which of them go to which split.

Folder and archive sources are decoded before duplicates are known and splits are drawn, so
the pixels need a home in between. An unnamed temporary file (written with ``write()``, read
with ``pread()``, never memory-mapped) keeps them in the page cache instead of the stage's
resident memory; the kernel deletes it when it is closed or the process dies, so a failed or
killed run leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError


class Spool:
    """Append-only fixed-size uint8 images in an unnamed temporary file."""

    def __init__(self, image_shape: tuple[int, int, int], directory: str | Path | None = None):
        self.image_shape = tuple(int(d) for d in image_shape)
        self.image_bytes = int(np.prod(self.image_shape))
        self.directory = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=self.directory, prefix=".prepare-spool-")
        except OSError as exc:
            raise DataError(f"cannot write a temporary file in {self.directory}: {exc.strerror or exc}") from None
        self.count = 0

    def append(self, pixels: np.ndarray) -> int:
        """Store one (H, W, C) uint8 image; returns its index."""
        if pixels.shape != self.image_shape or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 {self.image_shape}, got {pixels.dtype} {pixels.shape}")
        try:
            self._file.write(np.ascontiguousarray(pixels).data)
        except OSError as exc:
            raise DataError(
                f"cannot write decoded images to {self.directory}: {exc.strerror or exc}"
            ) from None
        self.count += 1
        return self.count - 1

    def finish(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:
            raise DataError(
                f"cannot write decoded images to {self.directory}: {exc.strerror or exc}"
            ) from None

    def read(self, index: int) -> np.ndarray:
        data = os.pread(self._file.fileno(), self.image_bytes, index * self.image_bytes)
        if len(data) != self.image_bytes:
            raise DataError(f"temporary image file in {self.directory} is truncated")
        return np.frombuffer(data, np.uint8).reshape(self.image_shape)

    def close(self) -> None:
        self._file.close()

    def view(self, indices=None, first_channel_only: bool = False) -> "SpooledImages":
        indices = np.arange(self.count) if indices is None else np.asarray(indices, np.int64)
        return SpooledImages(self, indices, first_channel_only)


class SpooledImages:
    """A lazy (N, H, W, C) uint8 array over spooled images: indexing composes indices, reading
    happens only through ``np.asarray`` (or iteration), a block at a time.

    It stands in for the image array of a :class:`cnnpipe.core.io.Split`, so the seeded
    split logic (``Split.take``) runs unchanged on images that never all sit in memory.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, spool: Spool, indices: np.ndarray, first_channel_only: bool = False):
        self._spool = spool
        self._indices = indices
        self._first_channel_only = first_channel_only
        height, width, channels = spool.image_shape
        self.shape = (len(indices), height, width, 1 if first_channel_only else channels)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._read_one(int(self._indices[key]))
        return SpooledImages(self._spool, self._indices[key], self._first_channel_only)

    def _read_one(self, spool_index: int) -> np.ndarray:
        pixels = self._spool.read(spool_index)
        return pixels[..., :1] if self._first_channel_only else pixels

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.uint8)
        for row, spool_index in enumerate(self._indices):
            out[row] = self._read_one(int(spool_index))
        return out if dtype is None else out.astype(dtype)
