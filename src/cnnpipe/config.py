"""params.yaml, loaded once and validated into typed, frozen config objects.

Every stage calls :func:`load_params`; a bad key or value raises :class:`ConfigError` with
one line that names the key (``train.epochs``) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cnnpipe.errors import ConfigError

VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _positive(value):
    return None if value > 0 else "must be > 0"


def _non_negative(value):
    return None if value >= 0 else "must be >= 0"


def _open_fraction(value):
    return None if 0 < value < 1 else "must be strictly between 0 and 1"


def _checked(default, fn):
    return field(default=default, metadata={"check": fn})


@dataclass(frozen=True)
class FashionMnistConfig:
    local_dir: str = "/usr/share/datasets/fashion-mnist"
    url: str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    download_dir: str = "data/downloads"


def _fraction(value):
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def _image_size(value):
    if len(value) != 2 or min(value) < 8:
        return "must be [height, width], each >= 8"
    return None


def _class_list(value):
    if len(value) < 2:
        return "must list at least 2 class names (or be null for all classes)"
    if len(set(value)) != len(value):
        return "must not list a class twice"
    return None


@dataclass(frozen=True)
class ImagesConfig:
    """How image files (data.source image_folder or archive) become one array."""

    image_size: tuple[int, int] = _checked((64, 64), _image_size)  # [height, width]
    channels: Literal[1, 3] = 3
    crop_to_aspect_ratio: bool = False
    max_pixels: int = _checked(50_000_000, _positive)


@dataclass(frozen=True)
class ImageFolderConfig:
    path: str = "data/images"
    license: str = "unspecified"


@dataclass(frozen=True)
class ArchiveConfig:
    path_or_url: str | None = None
    sha256: str | None = None
    subdir: str | None = None
    download_dir: str = "data/downloads"
    max_extracted_mb: int = _checked(4096, _positive)
    max_members: int = _checked(200_000, _positive)
    license: str = "unspecified"

    def __post_init__(self):
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256):
            raise ConfigError(
                f"data.archive.sha256 must be 64 hexadecimal digits, got {self.sha256!r}"
            )
        url = self.path_or_url or ""
        if url.startswith(("http://", "https://")) and self.sha256 is None:
            raise ConfigError(
                "data.archive.sha256 is required when data.archive.path_or_url is a URL"
            )
        if url and "://" in url and not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"data.archive.path_or_url must be a local path or an http(s) URL, got {url!r}"
            )


@dataclass(frozen=True)
class DataConfig:
    source: Literal[
        "fashion_mnist", "image_folder", "archive", "mnist", "cifar10", "cifar100"
    ] = "fashion_mnist"
    val_fraction: float = _checked(0.1, _open_fraction)
    test_fraction: float = _checked(0.2, _open_fraction)  # only for sources without a test split
    train_limit: int = _checked(0, _non_negative)
    test_limit: int = _checked(0, _non_negative)
    classes: tuple[str, ...] | None = _checked(None, _class_list)
    min_images_per_class: int = _checked(5, _positive)
    max_unreadable_fraction: float = _checked(0.05, _fraction)
    fashion_mnist: FashionMnistConfig = field(default_factory=FashionMnistConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    image_folder: ImageFolderConfig = field(default_factory=ImageFolderConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)

    def __post_init__(self):
        if self.source == "archive" and self.archive.path_or_url is None:
            raise ConfigError(
                "data.archive.path_or_url is required when data.source is archive"
            )
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                "data.val_fraction + data.test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int | None = None
    channels: Literal[1, 3] = 1
    normalization: Literal["unit", "symmetric", "standardize"] = "unit"

    def __post_init__(self):
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(
                f"preprocess.image_size must be null (keep) or >= 8, got {self.image_size}"
            )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _checked(10, _positive)
    batch_size: int = _checked(128, _positive)
    learning_rate: float = _checked(0.001, _positive)
    early_stopping_patience: int = _checked(3, _non_negative)
    shuffle_buffer: int = _checked(10000, _positive)


@dataclass(frozen=True)
class CompareConfig:
    sort_by: Literal["accuracy", "macro_f1", "loss"] = "accuracy"


# Keys of a variant entry that steer training rather than the architecture builder.
_VARIANT_TRAINING_KEYS = {
    "architecture",
    "epochs",
    "batch_size",
    "learning_rate",
    "fine_tune_layers",
    "fine_tune_epochs",
    "fine_tune_lr_factor",
    "pretrain_epochs",
    "train_images",
}


@dataclass(frozen=True)
class VariantConfig:
    name: str
    architecture: str
    hyperparameters: dict[str, Any]
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 0
    fine_tune_lr_factor: float = 0.1
    pretrain_epochs: int = 3
    train_images: int = 0  # labelled training images this variant sees; 0 = the whole split

    @property
    def pretrains(self) -> bool:
        """``weights: pretrain``: learn the backbone on a self-supervised source task first."""
        return self.hyperparameters.get("weights") == "pretrain"

    def resolved(self, train: TrainConfig) -> TrainConfig:
        """The shared training settings with this variant's overrides applied."""
        overrides = {
            key: getattr(self, key)
            for key in ("epochs", "batch_size", "learning_rate")
            if getattr(self, key) is not None
        }
        return dataclasses.replace(train, **overrides)


@dataclass(frozen=True)
class Params:
    seed: int
    data: DataConfig
    preprocess: PreprocessConfig
    train: TrainConfig
    models: dict[str, VariantConfig]
    compare: CompareConfig = field(default_factory=CompareConfig)

    def variant(self, name: str) -> VariantConfig:
        if name not in self.models:
            raise ConfigError(
                f"unknown variant `{name}`; params.yaml models: {', '.join(sorted(self.models))}"
            )
        return self.models[name]


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_params(raw)


def with_overrides(raw: dict, overrides: list[tuple[str, Any]]) -> dict:
    """A copy of raw params with each dotted ``key`` set to its value, as `dvc exp run -S`
    does; a key whose parent sections do not exist raises ConfigError naming it."""
    import copy

    result = copy.deepcopy(raw)
    for key, value in overrides:
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"cannot set `{key}`: params.yaml has no `{part}` there")
            node = node[part]
        node[leaf] = value
    return result


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml must be a mapping of sections")
    allowed = {"seed", "data", "preprocess", "train", "models", "compare"}
    _refuse_unknown(raw, allowed, "")
    for key in ("seed", "models"):
        if key not in raw:
            raise ConfigError(f"params.yaml: missing key `{key}`")
    seed = _coerce(raw["seed"], int, "seed")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    models_raw = raw["models"]
    if not isinstance(models_raw, dict) or not models_raw:
        raise ConfigError("models must be a non-empty mapping of variant name -> settings")
    return Params(
        seed=seed,
        data=_build(DataConfig, raw.get("data", {}), "data"),
        preprocess=_build(PreprocessConfig, raw.get("preprocess", {}), "preprocess"),
        train=_build(TrainConfig, raw.get("train", {}), "train"),
        models={name: _parse_variant(name, spec) for name, spec in models_raw.items()},
        compare=_build(CompareConfig, raw.get("compare", {}), "compare"),
    )


def _parse_variant(name: Any, spec: Any) -> VariantConfig:
    where = f"models.{name}"
    if not isinstance(name, str) or not VARIANT_NAME.match(name):
        raise ConfigError(
            f"{where}: variant names must be lower-case identifiers (they become file names)"
        )
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping with at least `architecture`")
    if "architecture" not in spec:
        raise ConfigError(f"{where}: missing key `architecture`")
    training = {k: v for k, v in spec.items() if k in _VARIANT_TRAINING_KEYS}
    hyperparameters = {k: v for k, v in spec.items() if k not in _VARIANT_TRAINING_KEYS}
    variant = _build(VariantConfig, {**training, "name": name, "hyperparameters": {}}, where)
    checks = {
        "epochs": _positive,
        "batch_size": _positive,
        "learning_rate": _positive,
        "fine_tune_layers": _non_negative,
        "fine_tune_epochs": _non_negative,
        "fine_tune_lr_factor": _positive,
        "pretrain_epochs": _positive,
        "train_images": _non_negative,
    }
    for key, check in checks.items():
        value = getattr(variant, key)
        if value is not None and (problem := check(value)):
            raise ConfigError(f"{where}.{key} {problem}, got {value!r}")

    # Imported here: the registry pulls in TensorFlow, which config-only callers need not pay for.
    from cnnpipe.models import ModelConfigError, validate_hyperparameters

    try:
        validate_hyperparameters(variant.architecture, _plain(hyperparameters))
    except ModelConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return dataclasses.replace(variant, hyperparameters=_plain(hyperparameters))


def _plain(value: Any) -> Any:
    """YAML lists become tuples so hyperparameters are hashable and immutable."""
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _refuse_unknown(raw: dict, allowed: set[str], prefix: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"unknown key `{prefix}{key}` in params.yaml; allowed: {', '.join(sorted(allowed))}"
            )


def _build(cls, raw: Any, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"`{where}` must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _refuse_unknown(raw, set(fields), f"{where}.")
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"params.yaml: missing key `{key}`")
            continue
        value = _coerce(raw[name], hints[name], key)
        check = f.metadata.get("check")
        if check and value is not None and (problem := check(value)):
            raise ConfigError(f"{key} {problem}, got {value!r}")
        values[name] = value
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(f"{key} must be one of: {choices}; got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is tuple:
        # YAML lists; tuples keep the frozen configs hashable. tuple[X, ...] is any length,
        # tuple[X, Y] exactly that many.
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            element_hints = [args[0]] * len(value)
        elif len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        else:
            element_hints = list(args)
        return tuple(
            _coerce(item, hint, f"{key}[{i}]")
            for i, (item, hint) in enumerate(zip(value, element_hints, strict=True))
        )
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if value != value:
            raise ConfigError(f"{key} must be a number, got NaN")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug here, not a user error
