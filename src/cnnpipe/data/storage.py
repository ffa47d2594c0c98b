"""Write the prepared splits as shards, all of them or none under the real folder name."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.core.shards import FORMAT, ShardWriteError, write_arrays
from cnnpipe.data.prepare import PreparedData

CARD_NAME = "data_card.json"


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.staging-"


def write_prepared(target: str | Path, prepared: PreparedData, card: dict) -> dict:
    """Write train/val/test shards and the data card into ``target``; returns the card as
    written (with its ``storage`` entry).

    Everything goes to a staging sibling first and replaces ``target`` in one rename at the
    end, so a failure (a full disk, a kill) leaves the previous folder, or none, never a
    mixture of old and new splits. A staging folder left by a killed run is removed here.
    """
    target = Path(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(_staging_prefix(target) + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=parent))
    except OSError as exc:
        raise DataError(f"cannot write {parent}: {exc.strerror or exc}") from None
    try:
        total = 0
        record_bytes = None
        for name, split in prepared.splits().items():
            try:
                shards = write_arrays(staging / name, split.images, split.labels)
            except ShardWriteError as exc:
                # The staging path means nothing to the person: name the real destination.
                raise DataError(f"cannot write {target / name}: {exc.reason}") from None
            total += shards.bytes_on_disk
            record_bytes = shards.record_bytes
        card = {
            **card,
            "storage": {"format": FORMAT, "record_bytes": record_bytes, "bytes": total},
        }
        try:
            (staging / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
            os.chmod(staging, 0o755)
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=parent))
                os.replace(target, old / "old")
            os.replace(staging, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise DataError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return card
