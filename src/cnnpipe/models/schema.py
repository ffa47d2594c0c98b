"""The typed settings every variant shares, and the field types architecture schemas use.

A variant entry in params.yaml is validated against the schema its ``architecture``'s
registration names, before any stage does work and without importing TensorFlow (Ludwig's
registered configs work the same way). The schema is the one home of every default and the
one validation: the trunks take its validated object and check nothing again.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from cnnpipe.data.bounds import MAX_IMAGE_SIDE
from cnnpipe.models.registry import ModelConfigError

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Rate = Annotated[float, Strict(), Field(ge=0, lt=1, allow_inf_nan=False)]
UnitFactor = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
Widths = Annotated[tuple[PositiveInt, ...], Field(min_length=1)]
# Bounded above so a typo (10000) is refused here, not by an OOM kill in a later stage.
ImageSide = Annotated[int, Strict(), Field(ge=8, le=MAX_IMAGE_SIDE)]
LabelSmoothing = Annotated[float, Strict(), Field(ge=0, le=0.5, allow_inf_nan=False)]
Optimizer = Literal["adam", "adamw", "sgd"]
LrSchedule = Literal["constant", "cosine", "one_cycle"]
# How training spreads over devices and machines (cnnpipe.train.distribute).
Strategy = Literal["default", "mirrored", "multi_worker"]
# Bounded so a typo is refused here, not by a process that starts thousands of threads.
ThreadCount = Annotated[int, Strict(), Field(gt=0, le=1024)]
DeviceCount = Annotated[int, Strict(), Field(gt=0, le=64)]


class Section(BaseModel):
    """Unknown keys are refused, values are never silently converted from strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Augmentation(Section):
    """Random layers run only while training; 0 (or null for flip) leaves one out."""

    flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = None
    rotation: UnitFactor = 0.0
    zoom: Rate = 0.0
    contrast: UnitFactor = 0.0
    translation: Rate = 0.0
    brightness: UnitFactor = 0.0


class Recipe(Section):
    """How a network is optimized: shared under ``train:``, overridable per variant."""

    optimizer: Optimizer = "adamw"
    weight_decay: NonNegativeFloat = 0.02
    lr_schedule: LrSchedule = "cosine"
    warmup_epochs: NonNegativeFloat = 0.5
    label_smoothing: LabelSmoothing = 0.1

    @model_validator(mode="after")
    def _coherent_recipe(self):
        check_recipe(self)
        return self


def check_recipe(recipe) -> None:
    """Combinations that would silently do something else than they say."""
    optimizer, decay = getattr(recipe, "optimizer", None), getattr(recipe, "weight_decay", None)
    if optimizer == "adamw" and decay == 0:
        raise ValueError("optimizer adamw needs weight_decay > 0 (without it, it is adam)")
    warmup, schedule = getattr(recipe, "warmup_epochs", None), getattr(recipe, "lr_schedule", None)
    if warmup and schedule not in (None, "cosine"):
        raise ValueError("warmup_epochs applies to lr_schedule cosine only")


def check_distribution(variant, shared) -> None:
    """The strategy settings ``variant`` trains with (its own over ``shared``'s), together."""
    merged = {
        key: getattr(shared, key) if getattr(variant, key) is None else getattr(variant, key)
        for key in DISTRIBUTION_KEYS
    }
    if merged["mirrored_devices"] is not None and merged["strategy"] != "mirrored":
        raise ValueError(
            f"mirrored_devices ({merged['mirrored_devices']}) applies to strategy mirrored "
            f"only; this variant trains with strategy {merged['strategy']}"
        )
    if merged["strategy"] == "multi_worker" and getattr(variant, "weights", None) == "pretrain":
        raise ValueError(
            "strategy multi_worker does not run the rotation pretraining of weights: pretrain; "
            "train this variant with strategy default or mirrored"
        )


# The recipe keys a variant may set for itself (None = the shared value under ``train:``).
RECIPE_KEYS = tuple(Recipe.model_fields)
# Where and on how many threads a variant trains: shared under ``train:``, and per variant.
DISTRIBUTION_KEYS = ("strategy", "mirrored_devices", "intra_op_threads", "inter_op_threads")


class Variant(Section):
    """Settings every variant takes: how long, on how many labels and with which recipe it
    trains. ``None`` means the shared value under ``train:``."""

    architecture: str
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    learning_rate: PositiveFloat | None = None
    optimizer: Optimizer | None = None
    weight_decay: NonNegativeFloat | None = None
    lr_schedule: LrSchedule | None = None
    warmup_epochs: NonNegativeFloat | None = None
    label_smoothing: LabelSmoothing | None = None
    train_images: NonNegativeInt = 0  # labelled training images; 0 = the whole split
    augmentation: Augmentation | None = None
    strategy: Strategy | None = None
    mirrored_devices: DeviceCount | None = None
    intra_op_threads: ThreadCount | None = None
    inter_op_threads: ThreadCount | None = None

    # Settings that override the shared ``train:`` ones when set.
    SHARED_OVERRIDES: ClassVar[tuple[str, ...]] = (
        "epochs", "batch_size", "learning_rate", *RECIPE_KEYS, *DISTRIBUTION_KEYS,
    )
    # Fields that steer training; every other field is the network's own.
    TRAINING_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"architecture", "train_images", *SHARED_OVERRIDES}
    )

    def hyperparameters(self) -> dict:
        """The network's own settings, every default filled in."""
        return self.model_dump(mode="json", exclude=set(self.training_keys()))

    @classmethod
    def training_keys(cls) -> frozenset[str]:
        return cls.TRAINING_KEYS


def validate_settings(schema: type[Variant], values: dict[str, Any]) -> Variant:
    """``values`` through ``schema``, or a one-line ModelConfigError naming the key."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        message = error["msg"].removeprefix("Value error, ")
        key = ".".join(str(part) for part in error["loc"])
        if not key:  # a check across fields (a model validator): its message names them
            raise ModelConfigError(f"`{values.get('architecture')}`: {message}") from None
        raise ModelConfigError(
            f"`{key}`: {message}. Received `{key}={error.get('input')!r}`"
        ) from None
