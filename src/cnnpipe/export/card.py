"""The export card, ``models/<variant>/export/model_card.json``: what a deployment needs to know.

It travels with the exported files (a model registry hands out the folder, not the repository):
the classes in output order, what each file takes and returns, how an image must be prepared
before the uint8 inputs, and which training settings (a hash), commit and test metrics the
model came from.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cnnpipe.core.io import write_json
from cnnpipe.export.savedmodel import EXIF_NOTE
from cnnpipe.inference import TrainedVariant

EXPORT_CARD_VERSION = 1
GIT_TIMEOUT_SECONDS = 10


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImagePreparation(_Frozen):
    """How an image file becomes the uint8 input; the SavedModel's ``serving_default`` does
    all of it but the EXIF rotation; the uint8 inputs expect it done."""

    raw_image_shape: tuple[int, int, int]  # (H, W, C) of the uint8 input
    dtype: Literal["uint8"] = "uint8"
    fit: Literal["crop", "stretch"]  # crop: centre crop to the aspect ratio before resizing
    resample: Literal["bilinear"] = "bilinear"
    channels: str = "grayscale by ITU-R 601 luma (Pillow's), colour by replicating gray"
    alpha: str = "composited onto white"
    exif_orientation: str = EXIF_NOTE
    normalization: str = "inside the model: send raw 0-255 pixels"


class ExportedFile(_Frozen):
    name: Annotated[str, Field(min_length=1)]  # relative to the export folder
    format: Literal["savedmodel", "onnx", "litert"]
    quantization: Literal["none", "dynamic_range"] = "none"
    bytes: Annotated[int, Field(ge=0)]
    interface: dict[str, Any]  # inputs and outputs (names, dtypes, shapes; -1 = any)


class ExportCard(_Frozen):
    export_card_version: Literal[1] = EXPORT_CARD_VERSION
    variant: Annotated[str, Field(min_length=1)]
    architecture: Annotated[str, Field(min_length=1)]
    class_names: tuple[str, ...]  # the order of every probabilities column
    export_version: Annotated[int, Field(ge=1)]
    input: ImagePreparation
    files: tuple[ExportedFile, ...]
    # sha256 of the model card's `config` (the resolved training settings) as canonical JSON:
    # two exports with the same hash trained from the same settings.
    params_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    git_revision: str  # the commit the export was made at, "unknown" outside git
    metrics: dict[str, Any] | None  # the evaluate stage's test metrics, when found
    parity_report: str  # where the parity measurements of this export are

    def write(self, path: str | Path) -> None:
        write_json(path, {**self.model_dump(mode="json"), "num_classes": len(self.class_names)})


def image_preparation(trained: TrainedVariant) -> ImagePreparation:
    spec = trained.input_spec
    return ImagePreparation(raw_image_shape=spec.shape,
                            fit="crop" if spec.crop_to_aspect_ratio else "stretch")


def params_hash(config: dict[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def git_revision(where: str | Path = ".") -> str:
    """``git rev-parse HEAD`` in ``where``; "unknown" without git, outside a repository or
    before the first commit."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=GIT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    revision = result.stdout.strip()
    return revision if result.returncode == 0 and revision else "unknown"


def read_metrics(path: str | Path) -> dict[str, Any] | None:
    """The evaluate stage's headline metrics, or None when it has not written (or wrote a
    damaged) file: an export of a variant picked from elsewhere still gets a card."""
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def size_in_bytes(path: str | Path) -> int:
    """A file's size, or the total of the files in a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size
