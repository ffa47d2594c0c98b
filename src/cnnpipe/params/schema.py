"""params.yaml as typed sections: the one home of every default, checked in full at once.

Reading follows DVC's YAML (1.2: ``1e-4`` is a number), so what the pipeline validates is
what `dvc exp run -S` and `dvc params diff` see. Nothing here imports TensorFlow: a bad file
is refused in well under a second, before any stage has done work.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, Strict, ValidationError, model_validator

from cnnpipe.core.errors import ConfigError
from cnnpipe.models import available_models, find_architecture
from cnnpipe.models.schema import (
    RECIPE_KEYS,
    DeviceCount,
    ImageSide,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Recipe,
    Section,
    Strategy,
    ThreadCount,
    Variant,
    check_distribution,
    check_recipe,
)
from cnnpipe.params.memory import check_training_memory

VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_NAMES = {"compare"}  # plots/images/compare holds the compare stage's chart

# Keys that earlier versions of params.yaml had: a file that still sets one is told where the
# setting went instead of only "unknown key". Dotted paths; `*` stands for a variant name.
REMOVED_KEYS: dict[str, str] = {
    "train.shuffle_buffer": "use `train.shuffle_buffer_mb` (the buffer is sized in megabytes)",
}

# Architectures that earlier versions registered, and what replaced them.
RENAMED_ARCHITECTURES = {
    "augmented_cnn": "augmented_cnn is now bn_gap_cnn with an `augmentation:` entry (the "
    "same layers); set architecture: bn_gap_cnn and keep the variant's augmentation",
}

Fraction = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
OpenFraction = Annotated[float, Strict(), Field(gt=0, lt=1, allow_inf_nan=False)]
Name = Annotated[str, Strict(), Field(min_length=1)]


class FashionMnist(Section):
    local_dir: Name = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
    url: Name = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    download_dir: Name = "data/downloads"


class Images(Section):
    """How image files (image_folder, archive sources) become uint8 records of one size."""

    image_size: tuple[ImageSide, ImageSide] = (64, 64)  # [height, width]
    # null follows the data: 1 when every decoded image is grayscale, else 3 (gray replicated).
    channels: Literal[1, 3] | None = None
    crop_to_aspect_ratio: Annotated[bool, Strict()] = False
    max_pixels: PositiveInt = 50_000_000  # decompression-bomb guard


class ImageFolder(Section):
    path: Name = "data/images"
    license: Name = "unspecified"


class Archive(Section):
    path_or_url: Name | None = None
    sha256: Annotated[str, Strict(), Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    subdir: Name | None = None
    download_dir: Name = "data/downloads"
    max_extracted_mb: PositiveInt = 4096
    max_members: PositiveInt = 200_000
    license: Name = "unspecified"

    @model_validator(mode="after")
    def _urls_are_pinned(self):
        location = self.path_or_url or ""
        if "://" in location and not location.startswith(("http://", "https://")):
            raise ValueError("path_or_url must be a local path or an http(s) URL")
        if location.startswith(("http://", "https://")) and self.sha256 is None:
            raise ValueError("sha256 is required when path_or_url is a URL")
        return self


class Download(Section):
    """Limits on every download (an archive URL, Fashion-MNIST without Debian's files)."""

    max_mb: PositiveInt = 4096  # announced or received: more is refused before filling a disk
    stall_seconds: PositiveFloat = 60.0  # under 64 KiB in this long: a stuck server
    deadline_seconds: PositiveFloat = 3600.0  # the whole download, however it trickles


# What data.input names when the source has no local input of its own (fashion_mnist, the
# Keras loaders, an archive URL): prepare's settings file, already among its deps, which
# holds the archive URL's sha256; Fashion-MNIST's checksums are in prepare's code.
NO_LOCAL_INPUT = "resolved/prepare.json"


def _expected_input(data) -> tuple[str, str] | None:
    """(the path data.input must name, where it comes from), or None for no local input."""
    if data.source == "image_folder":
        return data.image_folder.path, "image_folder.path"
    location = data.archive.path_or_url
    if data.source == "archive" and location and "://" not in location:
        return location, "archive.path_or_url"
    return None


class Data(Section):
    source: Literal[
        "fashion_mnist", "image_folder", "archive", "mnist", "cifar10", "cifar100"
    ] = "fashion_mnist"
    val_fraction: OpenFraction = 0.1
    test_fraction: OpenFraction = 0.2  # only for sources without their own test split
    train_limit: NonNegativeInt = 0
    test_limit: NonNegativeInt = 0
    classes: Annotated[tuple[Name, ...], Field(min_length=2)] | None = None
    min_images_per_class: PositiveInt = 5
    max_unreadable_fraction: Fraction = 0.05
    # Share of decoded images filed under two or more classes (links, copies) above which
    # prepare stops, and never below 2 images (one misfiled copy, in a folder of any size);
    # at or below it they are removed from every split.
    max_label_conflict_fraction: Fraction = 0.01
    fashion_mnist: FashionMnist = FashionMnist()
    images: Images = Images()
    image_folder: ImageFolder = ImageFolder()
    archive: Archive = Archive()
    download: Download = Download()
    # prepare's dependency on the data (dvc.yaml reads it: it cannot choose from `source`).
    # None (only when built in Python, never from params.yaml) skips the check below.
    input: Name | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must not list a class twice")
        if self.source == "archive" and self.archive.path_or_url is None:
            raise ValueError("archive.path_or_url is required when source is archive")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self

    @model_validator(mode="after")
    def _input_is_the_sources(self):
        if self.input is None:
            return self
        expected = _expected_input(self)
        if expected is None:
            if os.path.normpath(self.input) != NO_LOCAL_INPUT:
                raise ValueError(
                    f"input must be `{NO_LOCAL_INPUT}`: source {self.source} has no local "
                    f"input, and prepare must not depend on `{self.input}`"
                )
        elif os.path.normpath(self.input) != os.path.normpath(expected[0]):
            raise ValueError(
                f"input must be `{expected[0]}` ({expected[1]}) when source is {self.source}, "
                f"so that dvc status sees it change; got `{self.input}`"
            )
        return self


class Preprocess(Section):
    image_size: ImageSide | None = None  # null keeps the size
    # null keeps the prepared channels; 1 or 3 converts (luma / replication) inside the model.
    channels: Literal[1, 3] | None = None
    normalization: Literal["unit", "symmetric", "standardize"] = "unit"


class Train(Recipe):
    """Shared training settings; a variant's own epochs, batch_size, learning_rate and
    recipe keys (optimizer, weight_decay, lr_schedule, warmup_epochs, label_smoothing) win."""

    epochs: PositiveInt = 6
    batch_size: PositiveInt = 128
    learning_rate: PositiveFloat = 0.002
    early_stopping_patience: NonNegativeInt = 3
    # Early stopping keeps the epoch of lowest validation loss. On 15-20 validation images
    # that loss is noise: it kept the epoch-1 weights, at chance, of four variants on 200
    # digits (bench/RESULTS.md). A smaller split runs every epoch and keeps the last
    # weights, where the decayed schedule ends. 0 lets any split stop early.
    early_stopping_min_val_images: NonNegativeInt = 200
    # Sized in memory, not images: the buffer shuffles as many records as 256 MB holds, all of
    # Fashion-MNIST but about 1,700 photos of 224x224, whatever the data set's size (a split
    # within it is held in memory for the training reader; cnnpipe.core.shard_stream).
    shuffle_buffer_mb: PositiveInt = 256
    # Small data sets get smaller batches (down to 16) so each epoch has this many updates;
    # with ten steps an epoch BatchNorm's statistics never settle. 0 keeps batch_size.
    min_steps_per_epoch: NonNegativeInt = 50
    # Small data sets also get more epochs, up to this many images seen in all (early
    # stopping still ends them); 5 epochs of a large set are far beyond it. 0 keeps epochs.
    min_images_seen: NonNegativeInt = 30_000
    # balanced: sklearn's n / (k * count) weights, for imbalanced classes (medical scans).
    class_weight: Literal["none", "balanced"] = "none"
    # A variant whose estimated training memory (cnnpipe.params.memory) exceeds this is
    # refused before any stage runs, instead of being OOM-killed mid-epoch. null: this
    # machine's memory, read when params load. A check, not a setting: no stage reads it.
    max_memory_gb: PositiveFloat | None = None
    # Where a variant trains (cnnpipe.train.distribute): default, one device, as every
    # committed model trained; mirrored, the local GPUs (or mirrored_devices logical CPUs);
    # multi_worker, the machines TF_CONFIG names. The global batch stays batch_size.
    strategy: Strategy = "default"
    mirrored_devices: DeviceCount | None = None
    # TensorFlow's thread pools; null: its default, one per core. They change the weights
    # bitwise, so they are resolved settings: a change retrains.
    intra_op_threads: ThreadCount | None = None
    inter_op_threads: ThreadCount | None = None


class Evaluate(Section):
    # Test-time augmentation: the mean of the outputs for each image and its mirror image,
    # reported as tta_accuracy beside the plain accuracy (which never uses it).
    tta: Literal["none", "horizontal_flip"] = "horizontal_flip"


class Compare(Section):
    sort_by: Literal["accuracy", "balanced_accuracy", "macro_f1", "loss"] = "accuracy"


# Fewer test images than this make a 0.99 top-1 agreement bound meaningless (two misses fail it).
MIN_PARITY_IMAGES = 200


class Export(Section):
    """What export@<variant> writes for serving (SavedModel, ONNX, LiteRT) and checks."""

    # The variants exported by `dvc repro`: dvc.yaml's foreach reads this list before any
    # stage runs, so it names them (it cannot pick "the best"); `cnnpipe export VARIANT`
    # exports any other trained variant. Each must be under models:, so the default is none
    # (params.yaml names one); a params.yaml with other variants stays valid without it.
    variants: tuple[Name, ...] = ()
    # The SavedModel's version folder, <variant>/<version>/: TF Serving serves the highest
    # number it finds under its model base path, so a new export is a new number.
    version: PositiveInt = 1
    # Test images (evenly spaced over the test split) each format is compared on.
    parity_images: Annotated[int, Strict(), Field(ge=MIN_PARITY_IMAGES)] = 256

    @model_validator(mode="after")
    def _distinct_variants(self):
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variants must not list a variant twice")
        return self


class Params(BaseModel):
    """The whole file, validated; ``models`` maps each variant name to its own schema."""

    model_config = {"frozen": True, "arbitrary_types_allowed": True}

    seed: NonNegativeInt
    data: Data = Data()
    preprocess: Preprocess = Preprocess()
    train: Train = Train()
    models: dict[str, Variant]
    evaluate: Evaluate = Evaluate()
    compare: Compare = Compare()
    export: Export = Export()

    def variant(self, name: str) -> Variant:
        if name not in self.models:
            raise ConfigError(
                f"unknown variant `{name}`; params.yaml models: {', '.join(sorted(self.models))}"
            )
        return self.models[name]


SECTIONS = ("seed", "data", "preprocess", "train", "models", "evaluate", "compare", "export")
SECTION_MODELS = {
    "data": Data, "preprocess": Preprocess, "train": Train, "evaluate": Evaluate,
    "compare": Compare, "export": Export,
}


def read_yaml(path: str | Path) -> Any:
    """The file as DVC reads it (ruamel, YAML 1.2), or a one-line ConfigError."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found")
    try:
        return YAML(typ="safe").load(path.read_text())
    except YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise ConfigError(f"{path} is not valid YAML: {problem[:300]}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path))


def parse_params(raw: Any) -> Params:
    """Validate everything, values included; the first problem raises one ConfigError line."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml must be a mapping of sections")
    _refuse_unknown(raw, SECTIONS, "")
    for key in ("seed", "models"):
        if key not in raw:
            raise ConfigError(f"params.yaml: missing key `{key}`")
    models = raw["models"]
    if not isinstance(models, dict) or not models:
        raise ConfigError("models must be a non-empty mapping of variant name -> settings")
    for key, section in SECTION_MODELS.items():
        _refuse_unknown_nested(raw.get(key), section, f"{key}.")
    variants = {name: _parse_variant(name, spec) for name, spec in models.items()}
    sections = {key: value for key, value in raw.items() if key != "models"}
    # None for a section (a YAML key with nothing below it) means "all defaults".
    sections = {key: value for key, value in sections.items() if value is not None or key == "seed"}
    try:
        params = Params(models=variants, **sections)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, "")) from None
    for name, variant in params.models.items():
        _check_variant_recipe(name, variant, params.train)
    _check_export_variants(params)
    check_training_memory(params)
    return params


def variant_recipe(variant: Variant, shared: Train) -> dict[str, Any]:
    """The recipe ``variant`` trains with: its own keys over the shared ones.

    A warm-up inherited from ``train:`` is dropped when the variant picks a schedule that has
    none (overfit_cnn's constant rate), so that override takes one key, not two.
    """
    merged = {
        key: getattr(shared, key) if getattr(variant, key) is None else getattr(variant, key)
        for key in RECIPE_KEYS
    }
    if variant.lr_schedule not in (None, "cosine") and variant.warmup_epochs is None:
        merged["warmup_epochs"] = 0.0
    return merged


def _check_export_variants(params: Params) -> None:
    """export@<variant> needs the variant's trained model: a name not under models: would
    leave dvc.yaml a stage whose dependencies nothing produces."""
    for name in params.export.variants:
        if name not in params.models:
            raise ConfigError(
                f"export.variants: `{name}` is not a variant under models: "
                f"({', '.join(sorted(params.models))})"
            )


def _check_variant_recipe(name: str, variant: Variant, shared: Train) -> None:
    """A variant's own recipe keys can clash with the shared ones (adamw set here, its
    weight decay left at the shared 0): checked on the merged recipe it will train with;
    so are its strategy settings."""
    try:
        check_recipe(SimpleNamespace(**variant_recipe(variant, shared)))
        check_distribution(variant, shared)
    except ValueError as exc:
        raise ConfigError(f"models.{name}: {exc}") from None


def _parse_variant(name: Any, spec: Any) -> Variant:
    where = f"models.{name}"
    if not isinstance(name, str) or not VARIANT_NAME.match(name):
        raise ConfigError(
            f"{where}: variant names must be lower-case identifiers (they become file names)"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(f"{where}: `{name}` is taken by the compare stage's outputs")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping with at least `architecture`")
    if "architecture" not in spec:
        raise ConfigError(f"{where}: missing key `architecture`")
    architecture = find_architecture(spec["architecture"])
    if architecture is None and spec["architecture"] in RENAMED_ARCHITECTURES:
        raise ConfigError(f"{where}.architecture: {RENAMED_ARCHITECTURES[spec['architecture']]}")
    if architecture is None:
        raise ConfigError(
            f"{where}.architecture must be one of: {', '.join(available_models())}; "
            f"got {spec['architecture']!r}"
        )
    schema = architecture.schema
    _refuse_unknown(spec, tuple(schema.model_fields), f"{where}.", pattern="models.*.")
    _refuse_unknown_nested(spec, schema, f"{where}.")
    try:
        return schema.model_validate(spec)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, f"{where}.")) from None


def _refuse_unknown(raw: dict, allowed, prefix: str, pattern: str | None = None) -> None:
    for key in raw:
        if key in allowed:
            continue
        removed = REMOVED_KEYS.get(f"{pattern or prefix}{key}")
        if removed:
            raise ConfigError(f"`{prefix}{key}` was removed; {removed}")
        close = difflib.get_close_matches(str(key), list(allowed), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise ConfigError(
            f"unknown key `{prefix}{key}` in params.yaml{hint}; allowed: {', '.join(allowed)}"
        )


def _one_line(exc: ValidationError, prefix: str) -> str:
    error = exc.errors(include_url=False)[0]
    location = ""
    for part in error["loc"]:
        location += f"[{part}]" if isinstance(part, int) else f".{part}"
    key = (prefix.rstrip(".") + location).lstrip(".") or "params.yaml"
    message = error["msg"]
    value = error.get("input")
    shown = f"; got {value!r}" if not isinstance(value, dict) else ""
    if error["type"] == "value_error":
        return f"{key}: {message.removeprefix('Value error, ')}{shown}"
    if error["type"] == "extra_forbidden":
        return f"unknown key `{key}` in params.yaml"
    if error["type"] == "missing" and isinstance(error["loc"][-1], int):
        return f"{key.rsplit('[', 1)[0]}: too few values, nothing at [{error['loc'][-1]}]"
    if error["type"] == "missing":
        return f"params.yaml: missing key `{key}`"
    return f"{key}: {message[0].lower()}{message[1:]}{shown}"


def _refuse_unknown_nested(raw: Any, model: type[BaseModel], prefix: str) -> None:
    """Unknown keys anywhere in a section, named with a close match, before pydantic runs."""
    if not isinstance(raw, dict):
        return
    _refuse_unknown(raw, tuple(model.model_fields), prefix)
    for name, field in model.model_fields.items():
        for kind in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                _refuse_unknown_nested(raw.get(name), kind, f"{prefix}{name}.")
