"""The model card: what train@<variant> writes beside the saved model, as one typed schema.

Its writer (the train stage) and its readers (``TrainedVariant.load``, evaluate, predict, the
export stage and the prediction service) share this class, so a key cannot be written under
one name and read under another. Anything that uses a trained model takes what it needs from
here, never from code or params that may have changed since training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from cnnpipe.core.errors import ConfigError
from cnnpipe.core.io import write_json

# Raised when a field changes meaning; a card of another version is refused with one line.
CARD_VERSION = 2
# Sides above this are a damaged card, refused before anything of that size is allocated.
MAX_CARD_SIDE = 2048

Count = Annotated[int, Strict(), Field(ge=0)]
PositiveCount = Annotated[int, Strict(), Field(gt=0)]
Side = Annotated[int, Strict(), Field(gt=0, le=MAX_CARD_SIDE)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainedAs(_Frozen):
    """What actually trained, after the data-dependent settings were resolved: the batch
    size and epochs a small data set gets differ from params.yaml's (resolve_for_data)."""

    train_images: PositiveCount  # labelled images the target task learned from
    batch_size: PositiveCount
    epochs: PositiveCount  # target-task epochs configured (early stopping may end sooner)
    fine_tune_epochs: Count = 0
    pretrain_epochs: Count = 0  # rotation-task epochs before the target task (weights: pretrain)
    pretrain_batch_size: PositiveCount | None = None
    # 0: every epoch ran and the last weights were kept (no split, or one too small to judge).
    early_stopping_patience: Count | None = None
    # How it was spread (cnnpipe.train.distribute): batch_size is the global batch, split over
    # the replicas of all workers. The defaults are the one-process path, so cards written
    # before these fields existed read as what they were.
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    replicas: PositiveCount = 1
    workers: PositiveCount = 1


class ImageLoading(_Frozen):
    """How the prepare stage fitted image files to the stored size (image sources only)."""

    image_size: tuple[Side, Side]  # [height, width] every file was fitted to
    channels: Literal[1, 3]
    channels_setting: Literal[1, 3] | None = None  # null: the channels followed the files
    crop_to_aspect_ratio: Annotated[bool, Strict()]
    resample: Literal["bilinear"] = "bilinear"
    max_pixels: PositiveCount | None = None  # bigger files were skipped


class ModelCard(_Frozen):
    card_version: Literal[2] = CARD_VERSION
    variant: Annotated[str, Field(min_length=1)]
    architecture: Annotated[str, Field(min_length=1)]
    class_names: Annotated[tuple[str, ...], Field(min_length=2)]
    raw_image_shape: tuple[Side, Side, Literal[1, 3]]  # (H, W, C) uint8: the model's input
    # null for sources that come as arrays (Fashion-MNIST): no file was fitted to size.
    image_loading: ImageLoading | None
    preprocessing: dict[str, Any]  # the preprocess stage's settings, inside the model
    config: dict[str, Any]  # the resolved settings the variant trained from
    trained_as: TrainedAs

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @model_validator(mode="after")
    def _distinct_classes(self):
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names must not repeat a name")
        return self

    def write(self, path: str | Path) -> None:
        write_json(path, {**self.model_dump(mode="json"), "num_classes": self.num_classes})

    @classmethod
    def read(cls, path: str | Path) -> ModelCard:
        """The card at ``path``, or a one-line ConfigError: unreadable, not JSON, written by
        another card version (retrain), or a field that is missing or impossible."""
        path = Path(path)
        raw = _read_object(path)
        version = raw.get("card_version", 1)
        if version != CARD_VERSION:
            raise ConfigError(
                f"{path} is a version {version} model card, from a cnnpipe that trained "
                f"differently (this one reads version {CARD_VERSION}); `dvc repro` retrains it"
            )
        raw.pop("num_classes", None)  # derived from class_names; written for people
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"]) or "the card"
            raise ConfigError(
                f"{path}: {where}: {error['msg']}; the card is damaged or not from this "
                "pipeline (`dvc repro` retrains the variant)"
            ) from None


def _read_object(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; `dvc repro` trains the variant") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} does not hold a model card (a JSON object)")
    return raw
