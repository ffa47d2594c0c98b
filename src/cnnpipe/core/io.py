"""Atomic file writes and the on-disk formats shared by the stages."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "Split":
        return Split(self.images[indices], self.labels[indices])



@contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    A stage killed half-way (or failing) must never leave a half-written output that DVC or
    a later stage would take for a real one. ``suffix`` keeps writers that sniff the file
    extension (Keras, numpy) happy. A kill skips the clean-up below, so the temporaries an
    earlier killed writer of the same path left are swept first (one writer per output:
    DVC locks the repository while a stage runs).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    for stale in path.parent.glob(glob.escape(prefix) + "*" + glob.escape(suffix)):
        stale.unlink(missing_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except OSError as exc:
        about_temporary = exc.filename is None or str(exc.filename).startswith(
            str(path.parent / prefix)
        )
        if exc.errno is None or not about_temporary:
            raise
        # Name the output a person asked for, not its temporary (a write to an open file,
        # such as on a full disk, names no file at all).
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; run the stage that produces it (dvc repro)")
    return json.loads(path.read_text())


def write_csv(path: str | Path, rows: list[dict]) -> None:
    import csv

    if not rows:
        raise ValueError(f"refusing to write an empty table to {path}")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
