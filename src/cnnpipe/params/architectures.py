"""Each architecture's settings as a typed schema: types, ranges, allowed strings, defaults.

A variant entry in params.yaml is validated against the schema its ``architecture`` names,
before any stage does work and without importing TensorFlow (Ludwig's registered configs
work the same way). The schema is the one home of every default: the resolved config that
train@<variant> reads has each field filled in, so the builders' own keyword defaults never
decide what the pipeline trains (a test keeps the two identical for direct library use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator

from cnnpipe.data.bounds import MAX_IMAGE_SIDE

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
Rate = Annotated[float, Strict(), Field(ge=0, lt=1, allow_inf_nan=False)]
Widths = Annotated[tuple[PositiveInt, ...], Field(min_length=1)]
# Bounded above so a typo (10000) is refused here, not by an OOM kill in a later stage.
ImageSide = Annotated[int, Strict(), Field(ge=8, le=MAX_IMAGE_SIDE)]


class Section(BaseModel):
    """Unknown keys are refused, values are never silently converted from strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Augmentation(Section):
    """Random layers run only while training; 0 (or null for flip) leaves one out."""

    flip: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = None
    rotation: Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    zoom: Rate = 0.0
    contrast: Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    translation: Rate = 0.0
    brightness: Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)] = 0.0


NonNegativeFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
LabelSmoothing = Annotated[float, Strict(), Field(ge=0, le=0.5, allow_inf_nan=False)]
Optimizer = Literal["adam", "adamw", "sgd"]
LrSchedule = Literal["constant", "cosine", "one_cycle"]


class Recipe(Section):
    """How a network is optimized: shared under ``train:``, overridable per variant."""

    optimizer: Optimizer = "adam"
    weight_decay: NonNegativeFloat = 0.0
    lr_schedule: LrSchedule = "constant"
    warmup_epochs: NonNegativeFloat = 0.0
    label_smoothing: LabelSmoothing = 0.0

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


# The recipe keys a variant may set for itself (None = the shared value under ``train:``).
RECIPE_KEYS = tuple(Recipe.model_fields)


class Variant(Section):
    """Settings every variant takes: how long, on how many labels and with which recipe it
    trains.

    ``None`` means the shared value under ``train:``.
    """

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

    # Settings that override the shared ``train:`` ones when set.
    SHARED_OVERRIDES: ClassVar[tuple[str, ...]] = (
        "epochs", "batch_size", "learning_rate", *RECIPE_KEYS,
    )
    # Fields that steer training; every other field is passed to the architecture's builder.
    TRAINING_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"architecture", "train_images", *SHARED_OVERRIDES}
    )

    def hyperparameters(self) -> dict:
        """The builder's keyword arguments, every default filled in."""
        return self.model_dump(mode="json", exclude=set(self.training_keys()))

    @classmethod
    def training_keys(cls) -> frozenset[str]:
        return cls.TRAINING_KEYS


_SCHEMAS: dict[str, type[Variant]] = {}


def register_schema(cls: type[Variant]) -> type[Variant]:
    """Register a variant schema under the architecture its ``architecture`` literal names."""
    (name,) = cls.model_fields["architecture"].annotation.__args__
    if name in _SCHEMAS:
        raise ValueError(f"architecture schema `{name}` is registered twice")
    _SCHEMAS[name] = cls
    return cls


def architecture_names() -> list[str]:
    return sorted(_SCHEMAS)


def schema_for(architecture: str) -> type[Variant] | None:
    return _SCHEMAS.get(architecture)


@register_schema
class SimpleCnn(Variant):
    architecture: Literal["simple_cnn"]
    filters: Widths = (32, 64, 64)
    kernel_size: PositiveInt = 3
    dense_units: PositiveInt = 64


@register_schema
class RegularizedCnn(Variant):
    architecture: Literal["regularized_cnn"]
    filters: Widths = (32, 64, 128)
    kernel_size: PositiveInt = 3
    conv_dropout: Rate = 0.25
    dense_units: PositiveInt = 128
    dense_dropout: Rate = 0.5


@register_schema
class OverfitCnn(Variant):
    architecture: Literal["overfit_cnn"]
    filters: Widths = (512, 512)
    kernel_size: PositiveInt = 3
    dense_units: PositiveInt = 1000


@register_schema
class BnGapCnn(Variant):
    architecture: Literal["bn_gap_cnn"]
    filters: Widths = (32, 64, 128)
    kernel_size: PositiveInt = 3
    dense_units: PositiveInt = 128
    dropout: Rate = 0.5


@register_schema
class ResidualCnn(Variant):
    architecture: Literal["residual_cnn"]
    stem_filters: PositiveInt = 64
    stem_kernel: PositiveInt = 3
    stem_strides: PositiveInt = 1
    residual_filters: PositiveInt = 64
    block_filters: Widths = (128, 256)
    kernel_size: PositiveInt = 3
    dense_units: PositiveInt = 256
    dropout: Rate = 0.5


@register_schema
class InceptionAttention(Variant):
    architecture: Literal["inception_attention"]
    stem_filters: PositiveInt = 32
    stem_kernel: PositiveInt = 3
    stem_strides: PositiveInt = 1
    inception_filters: Widths = (32, 64)
    attention_ratio: PositiveInt = 8
    dropout: Rate = 0.4


# What the tutorial's food classifier uses.
DEFAULT_AUGMENTATION = Augmentation(flip="horizontal", rotation=0.1, zoom=0.1, contrast=0.1)


@register_schema
class AugmentedCnn(Variant):
    architecture: Literal["augmented_cnn"]
    augmentation: Augmentation | None = DEFAULT_AUGMENTATION
    filters: Widths = (32, 64, 128)
    kernel_size: PositiveInt = 3
    dense_units: PositiveInt = 256
    dropout: Rate = 0.5


IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # widths Keras publishes weights for
MIN_MOBILENET_SIZE = 32  # five stride-2 stages; Keras refuses smaller inputs


def _weights_source(value: str) -> str:
    if value in ("none", "imagenet", "pretrain"):
        return value
    if not value.endswith(".h5"):
        raise ValueError("must be none, imagenet, pretrain or the path of a .weights.h5 file")
    if not Path(value).is_file():
        raise ValueError("names a weights file that does not exist")
    return value


@register_schema
class MobilenetTransfer(Variant):
    architecture: Literal["mobilenet_transfer"]
    alpha: PositiveFloat = 0.35
    image_size: Annotated[int, Strict(), Field(ge=MIN_MOBILENET_SIZE, le=MAX_IMAGE_SIDE)] = 96
    dense_units: PositiveInt = 128
    dropout: Rate = 0.2
    # none | imagenet | PATH.weights.h5 | pretrain (a self-supervised source task first, offline)
    weights: Annotated[str, Strict(), AfterValidator(_weights_source)] = "none"
    pretrain_epochs: PositiveInt = 1  # rotation-prediction epochs (weights: pretrain only)
    fine_tune_epochs: NonNegativeInt = 0  # epochs with the base unfrozen, after the head
    fine_tune_layers: NonNegativeInt = 0  # top layers of the base that fine-tuning unfreezes
    fine_tune_lr_factor: PositiveFloat = 0.1  # the Keras transfer guide's 10x smaller rate

    TRAINING_KEYS: ClassVar[frozenset[str]] = Variant.TRAINING_KEYS | {
        "pretrain_epochs", "fine_tune_epochs", "fine_tune_layers", "fine_tune_lr_factor",
    }

    @model_validator(mode="after")
    def _imagenet_needs_a_published_width(self):
        if self.weights == "imagenet" and self.alpha not in IMAGENET_ALPHAS:
            raise ValueError(
                f"alpha {self.alpha:g} has no ImageNet weights; use one of "
                f"{', '.join(f'{a:g}' for a in IMAGENET_ALPHAS)}"
            )
        return self
