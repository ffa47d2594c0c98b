"""HTTP(S) downloads that end: a size cap, a stall detector and an overall deadline.

A socket timeout alone bounds each read, not the download: a server that sends one byte
every few seconds keeps every read alive forever. So the bytes are counted against the clock
as they arrive; the socket timeout only makes a silent server wake the loop up. A download
that stops early is reported as cut off (not as a checksum mismatch later), and whatever
happens, a failed download leaves no file behind.
"""

from __future__ import annotations

import http.client
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cnnpipe.core.errors import DataError
from cnnpipe.core.io import atomic_path

CHUNK_BYTES = 1 << 20
# Less than this in a whole stall window is a stuck server or link, not a slow one: 64 KiB a
# minute (the default window) is a thousandth of a slow home connection.
STALL_MIN_BYTES = 64 * 1024
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class DownloadLimits:
    max_bytes: int
    stall_seconds: float
    deadline_seconds: float

    @classmethod
    def from_settings(cls, download) -> DownloadLimits:
        """From the ``data.download`` settings (the schema or the resolved file)."""
        return cls(
            max_bytes=download.max_mb * 2**20,
            stall_seconds=download.stall_seconds,
            deadline_seconds=download.deadline_seconds,
        )


class _Progress:
    """Progress on stderr: a live line on a terminal, a line per 10% in logs (dvc repro)."""

    def __init__(self, label: str, total: int | None, stream: IO[str]):
        self.label, self.total, self.stream = label, total, stream
        self.live = stream.isatty()
        self.done = 0
        self.last_step = -1
        self.last_time = 0.0

    def update(self, amount: int) -> None:
        self.done += amount
        if self.total:
            step = min(10, self.done * 10 // self.total)
            now = time.monotonic()
            if self.live and now - self.last_time >= 0.2:
                self.last_time = now
                self._write(f"\r{self._text()}", end="")
            elif not self.live and step > self.last_step:
                self.last_step = step
                self._write(self._text())
        elif not self.live and self.done // (50 * CHUNK_BYTES) > self.last_step:
            self.last_step = self.done // (50 * CHUNK_BYTES)
            self._write(self._text())

    def finish(self) -> None:
        if self.live:
            self._write(f"\r{self._text()}")

    def _text(self) -> str:
        mb = self.done / 1e6
        if self.total:
            percent = 100 * self.done // self.total
            return f"{self.label}: {mb:.1f} / {self.total / 1e6:.1f} MB ({percent}%)"
        return f"{self.label}: {mb:.1f} MB"

    def _write(self, text: str, end: str = "\n") -> None:
        print(text, end=end, file=self.stream, flush=True)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count} bytes"


@dataclass
class _Transfer:
    """What is known of a download so far: the error handlers report it after a failure."""

    received: int = 0
    announced: int | None = None
    responded: bool = False


def download(
    url: str, destination: Path, limits: DownloadLimits, stream: IO[str] | None = None
) -> None:
    """Download ``url`` to ``destination`` atomically, reporting progress to stderr.

    DataError (one line) when the server is unreachable, announces or sends more than
    ``limits.max_bytes``, stalls, misses the deadline, or closes the connection early.
    """
    stream = sys.stderr if stream is None else stream
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Each read waits at most this long, so a silent server still reaches the checks below.
    read_timeout = min(limits.stall_seconds, limits.deadline_seconds)
    transfer = _Transfer()
    try:
        with (
            # It also sweeps the partial files a killed run left.
            atomic_path(destination, suffix=PARTIAL_SUFFIX) as partial,
            open(partial, "wb") as out,
            urllib.request.urlopen(url, timeout=read_timeout) as response,
        ):
            transfer.responded = True
            _receive(url, destination, response, out, limits, stream, started, transfer)
    except DataError:
        raise
    except http.client.IncompleteRead:
        raise _cut_off(
            url, transfer.received, transfer.announced, "the chunked body ended early"
        ) from None
    except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException,
            ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if transfer.responded and isinstance(exc, TimeoutError):
            _check_deadline(url, time.monotonic() - started, limits, transfer.received)
            raise _stalled(url, 0, read_timeout, transfer.received) from None
        if transfer.received:
            raise _cut_off(url, transfer.received, transfer.announced, str(reason)) from None
        raise DataError(f"download of {url} failed: {reason}") from None


def _receive(
    url: str,
    destination: Path,
    response,
    out: IO[bytes],
    limits: DownloadLimits,
    stream: IO[str],
    started: float,
    transfer: _Transfer,
) -> None:
    """Copy the response body into ``out``, enforcing the size cap, stall window and deadline;
    ``transfer`` is kept current so a failure mid-way can say how far it got."""
    length = response.headers.get("Content-Length")
    transfer.announced = int(length) if length and length.isdigit() else None
    announced = transfer.announced
    if announced is not None and announced > limits.max_bytes:
        raise DataError(
            f"download of {url} refused: the server announces {_size(announced)}, more "
            f"than the limit of {_size(limits.max_bytes)} (data.download.max_mb)"
        )
    progress = _Progress(f"downloading {url}", announced, stream)
    # read1 returns what has arrived; read(n) would wait for all n bytes.
    read = getattr(response, "read1", response.read)
    window_start, window_bytes = started, 0
    while True:
        chunk = read(CHUNK_BYTES)
        if not chunk:
            break
        transfer.received += len(chunk)
        received = transfer.received
        if received > limits.max_bytes:
            raise DataError(
                f"download of {url} refused: more than the limit of "
                f"{_size(limits.max_bytes)} arrived (data.download.max_mb)"
            )
        _write_chunk(url, destination, out, chunk)
        progress.update(len(chunk))
        now = time.monotonic()
        _check_deadline(url, now - started, limits, received)
        window_bytes += len(chunk)
        if now - window_start >= limits.stall_seconds:
            if window_bytes < STALL_MIN_BYTES:
                raise _stalled(url, window_bytes, now - window_start, received)
            window_start, window_bytes = now, 0
    progress.finish()
    if announced is not None and transfer.received < announced:
        raise _cut_off(url, transfer.received, announced, "the server closed the connection")


def _write_chunk(url: str, destination: Path, out: IO[bytes], chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as exc:  # a full disk is not the server's fault
        raise DataError(
            f"cannot write the download of {url} into {destination.parent}: "
            f"{exc.strerror or exc}"
        ) from None


def _check_deadline(url: str, elapsed: float, limits: DownloadLimits, received: int) -> None:
    if elapsed >= limits.deadline_seconds:
        raise DataError(
            f"download of {url} abandoned: not finished after {elapsed:.1f} s "
            f"({_size(received)} received; data.download.deadline_seconds is "
            f"{limits.deadline_seconds:g}); nothing was kept"
        )


def _stalled(url: str, window_bytes: int, seconds: float, received: int) -> DataError:
    return DataError(
        f"download of {url} stalled: {window_bytes} bytes in the last {seconds:.1f} s "
        f"({_size(received)} received in all; data.download.stall_seconds); nothing was kept"
    )


def _cut_off(url: str, received: int, announced: int | None, reason: str) -> DataError:
    expected = f" of the {announced} announced" if announced is not None else ""
    return DataError(
        f"download of {url} truncated: {reason} after {received} bytes{expected}; "
        "nothing was kept, run again to retry"
    )
