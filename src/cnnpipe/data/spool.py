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
    """Append-only uint8 images of one size in an unnamed temporary file, each stored with
    its own channel count (1 or 3), so a grayscale set costs a third of an RGB one and the
    channel decision can wait until every image has been seen."""

    def __init__(self, image_size: tuple[int, int], directory: str | Path | None = None):
        self.image_size = tuple(int(d) for d in image_size)
        self._pixels_per_channel = self.image_size[0] * self.image_size[1]
        self.directory = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=self.directory, prefix=".prepare-spool-")
        except OSError as exc:
            raise DataError(
                f"cannot write a temporary file in {self.directory}: {exc.strerror or exc}"
            ) from None
        self._offsets: list[int] = []
        self._channels = bytearray()
        self._end = 0

    @property
    def count(self) -> int:
        return len(self._offsets)

    @property
    def all_gray(self) -> bool:
        return 3 not in self._channels

    def append(self, pixels: np.ndarray) -> int:
        """Store one (H, W, 1 or 3) uint8 image; returns its index."""
        channels_ok = pixels.ndim == 3 and pixels.shape[2] in (1, 3)
        if pixels.shape[:2] != self.image_size or not channels_ok or pixels.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 {self.image_size} x 1 or 3, got {pixels.dtype} {pixels.shape}"
            )
        try:
            self._file.write(np.ascontiguousarray(pixels).data)
        except OSError as exc:
            raise DataError(
                f"cannot write decoded images to {self.directory}: {exc.strerror or exc}"
            ) from None
        self._offsets.append(self._end)
        self._channels.append(pixels.shape[2])
        self._end += pixels.size
        return self.count - 1

    def finish(self) -> None:
        try:
            self._file.flush()
        except OSError as exc:
            raise DataError(
                f"cannot write decoded images to {self.directory}: {exc.strerror or exc}"
            ) from None

    def read(self, index: int, channels: int) -> np.ndarray:
        """Image ``index`` with ``channels`` channels (a gray one replicated for 3)."""
        stored = self._channels[index]
        size = stored * self._pixels_per_channel
        data = os.pread(self._file.fileno(), size, self._offsets[index])
        if len(data) != size:
            raise DataError(f"temporary image file in {self.directory} is truncated")
        pixels = np.frombuffer(data, np.uint8).reshape(*self.image_size, stored)
        if stored == channels:
            return pixels
        if stored == 1:
            return np.repeat(pixels, channels, axis=-1)
        raise ValueError(f"image {index} is colour; it cannot be read as {channels} channel(s)")

    def close(self) -> None:
        self._file.close()

    def view(self, channels: int, indices=None) -> "SpooledImages":
        indices = np.arange(self.count) if indices is None else np.asarray(indices, np.int64)
        return SpooledImages(self, indices, channels)


class SpooledImages:
    """A lazy (N, H, W, C) uint8 array over spooled images: indexing composes indices, reading
    happens only through ``np.asarray`` (or an integer index), one image at a time.

    It stands in for the image array of a :class:`cnnpipe.core.io.Split`, so the seeded
    split logic (``Split.take``) runs unchanged on images that never all sit in memory.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, spool: Spool, indices: np.ndarray, channels: int):
        self._spool = spool
        self._indices = indices
        self._channels = channels
        self.shape = (len(indices), *spool.image_size, channels)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._spool.read(int(self._indices[key]), self._channels)
        return SpooledImages(self._spool, self._indices[key], self._channels)

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.uint8)
        for row, spool_index in enumerate(self._indices):
            out[row] = self._spool.read(int(spool_index), self._channels)
        return out if dtype is None else out.astype(dtype)
