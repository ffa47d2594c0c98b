"""One registration per architecture, in the manner of timm's ``register_model``.

An :class:`Architecture` carries everything that knows the network: its settings schema
(types, ranges, defaults, descriptions), its trunk on the shared classifier skeleton
(:mod:`cnnpipe.models.skeleton`), its fixed input needs, its memory walk, its fine-tuning
split and a tiny configuration for tests. Adding an architecture is one module in
``cnnpipe/models/zoo`` plus its entry in params.yaml.

Nothing here imports TensorFlow: params are validated against the schemas, and memory is
estimated from the walks, in well under a second.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cnnpipe.core.errors import CnnpipeError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ModelConfigError(ValueError, CnnpipeError):
    """An architecture name, hyperparameter or value the builders refuse; one-line message."""


def check_num_classes(num_classes: Any) -> int:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ModelConfigError(
            f"`num_classes` must be an integer >= 2. Received `num_classes={num_classes!r}`"
        )
    return num_classes


@dataclass(frozen=True)
class InputNeeds:
    """What an architecture needs of the image its trunk sees, whatever the preprocessing.

    ``side_key`` names the hyperparameter holding the square side the model resizes to
    (MobileNetV2's ``image_size``); ``channels`` and ``normalization`` are forced when set.
    """

    side_key: str | None = None
    channels: int | None = None
    normalization: str | None = None

    def model_shape(self, hyperparameters, preprocessed: tuple[int, int, int]):
        """The (H, W, C) the trunk works at, given the shape after preprocessing."""
        forced = self.overrides(hyperparameters)
        height, width = forced.get("image_size", preprocessed[:2])
        return (height, width, forced.get("channels", preprocessed[2]))

    def overrides(self, hyperparameters) -> dict[str, Any]:
        """Keyword overrides for :func:`cnnpipe.models.inputs.model_input`."""
        found: dict[str, Any] = {}
        if self.side_key is not None:
            side = getattr(hyperparameters, self.side_key)
            found["image_size"] = (side, side)
        if self.channels is not None:
            found["channels"] = self.channels
        if self.normalization is not None:
            found["normalization"] = self.normalization
        return found


@dataclass(frozen=True)
class FineTuneSplit:
    """fastai's split, declared per architecture: the nested model named ``backbone`` is
    frozen while the head trains, then its top layers are unfrozen."""

    backbone: str


@dataclass(frozen=True)
class Architecture:
    """A registered architecture.

    - ``schema``: its pydantic settings class (a ``cnnpipe.models.schema.Variant``);
    - ``trunk(hp, backbone_weights)``: returns ``apply(x, input_shape) -> x``, the layers
      between the model's input block and the classification head. Layers it must create
      before the input block (a pretrained base, so a failed download fails fast) it
      creates when called, the rest inside ``apply``. ``backbone_weights`` is what the one
      ``init_weights`` step decided: None, ``"imagenet"`` or a weights file;
    - ``walk(walk, hp)``: the same layers on paper (:class:`cnnpipe.models.walk.ShapeWalk`);
    - ``tiny``: hyperparameters that build in well under a second, for tests.
    """

    name: str
    schema: type
    trunk: Callable[..., Callable]
    walk: Callable[..., None]
    tiny: Mapping[str, Any]
    description: str
    input_needs: InputNeeds = field(default_factory=InputNeeds)
    fine_tune: FineTuneSplit | None = None

    def settings(self, hyperparameters: Mapping[str, Any] | None = None):
        """``hyperparameters`` validated by the schema, every default filled in."""
        from cnnpipe.models.schema import validate_settings

        return validate_settings(self.schema, {"architecture": self.name, **(hyperparameters or {})})


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    """Register ``architecture`` under its name; a duplicate name is a bug, refused."""
    name = architecture.name
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"Architecture names must be lower-case identifiers, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"Architecture `{name}` is registered twice")
    declared = architecture.schema.model_fields["architecture"].annotation.__args__
    if declared != (name,):
        raise ValueError(f"Architecture `{name}`: its schema declares architecture {declared}")
    _REGISTRY[name] = architecture
    return architecture


@contextmanager
def registered(architecture: Architecture) -> Iterator[Architecture]:
    """Register ``architecture`` for the duration of a ``with`` block (tests)."""
    register_architecture(architecture)
    try:
        yield architecture
    finally:
        _REGISTRY.pop(architecture.name, None)


def _load_zoo() -> None:
    import cnnpipe.models.zoo  # noqa: F401  (each module registers itself)


def available_models() -> list[str]:
    """Registered architecture names, sorted."""
    _load_zoo()
    return sorted(_REGISTRY)


def get_architecture(name: Any) -> Architecture:
    _load_zoo()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ModelConfigError(
            f"Unknown architecture `{name}`. Known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def find_architecture(name: Any) -> Architecture | None:
    _load_zoo()
    return _REGISTRY.get(name) if isinstance(name, str) else None


def plain_trunk(apply_layers: Callable[..., Any]) -> Callable[..., Callable]:
    """A trunk for architectures without a backbone: ``apply_layers(x, hp, input_shape)``
    creates every layer when the skeleton applies it."""

    def trunk(hyperparameters, backbone_weights=None):
        del backbone_weights  # the skeleton refuses weights for an architecture without a split
        return lambda x, input_shape: apply_layers(x, hyperparameters, input_shape)

    return trunk
