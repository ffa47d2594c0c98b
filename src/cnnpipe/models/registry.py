"""Architecture registry: a name -> builder mapping, in the manner of timm's ``register_model``.

Builders are plain functions ``builder(input_shape, num_classes, *, <hyperparameters>)``; the
keyword-only parameters ARE the hyperparameters an architecture takes, so params.yaml can be
checked against a builder's signature without importing or building anything.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from cnnpipe.core.errors import CnnpipeError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_POSITIONAL = ("input_shape", "num_classes")
_REGISTRY: dict[str, Callable[..., Any]] = {}


class ModelConfigError(ValueError, CnnpipeError):
    """An architecture name, hyperparameter or value the builders refuse; one-line message.

    Also a :class:`CnnpipeError`, so the CLI reports it like any other fixable user error.
    """


def register_model(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers a builder under ``name``; a duplicate name is a bug, refused."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"Architecture names must be lower-case identifiers. Received `name={name!r}`"
        )

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            previous = _REGISTRY[name]
            raise ValueError(
                f"Architecture `{name}` is already registered by "
                f"{previous.__module__}.{previous.__qualname__}"
            )
        _check_builder_signature(name, builder)
        _REGISTRY[name] = builder
        return builder

    return decorator


def _check_builder_signature(name: str, builder: Callable[..., Any]) -> None:
    # Validation reads hyperparameter names off the signature, so a builder with **kwargs or
    # a required keyword would make validate_hyperparameters lie; catch that at import time.
    params = list(inspect.signature(builder).parameters.values())
    leading = tuple(p.name for p in params[:2])
    if leading != _POSITIONAL or any(
        p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params[:2]
    ):
        raise TypeError(
            f"Builder for `{name}` must start with (input_shape, num_classes); got {leading}"
        )
    for p in params[2:]:
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            raise TypeError(
                f"Builder for `{name}`: `{p.name}` must be keyword-only with a default"
            )


def available_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def _builder(name: Any) -> Callable[..., Any]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ModelConfigError(
            f"Unknown architecture `{name}`. Known: {', '.join(available_models())}"
        )
    return _REGISTRY[name]


def hyperparameter_names(name: str) -> list[str]:
    """Sorted hyperparameters (keyword-only builder parameters) that ``name`` takes."""
    params = inspect.signature(_builder(name)).parameters.values()
    return sorted(p.name for p in params if p.kind is p.KEYWORD_ONLY)


def validate_hyperparameters(name: str, hyperparameters: Mapping[str, Any]) -> None:
    """Refuse an unknown architecture or a hyperparameter its builder does not take.

    Only names are checked here (cheap, no TensorFlow work); values are checked by the builder.
    """
    allowed = hyperparameter_names(name)
    if hyperparameters is None:
        return
    if not isinstance(hyperparameters, Mapping):
        raise ModelConfigError(
            f"Hyperparameters of `{name}` must be a mapping. "
            f"Received `hyperparameters={hyperparameters!r}`"
        )
    unknown = sorted(str(key) for key in hyperparameters if key not in allowed)
    if unknown:
        noun = "hyperparameter" if len(unknown) == 1 else "hyperparameters"
        keys = ", ".join(f"`{key}`" for key in unknown)
        raise ModelConfigError(
            f"Architecture `{name}` does not take {noun} {keys}; it takes: {', '.join(allowed)}"
        )


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **hyperparameters: Any
):
    """Build the uncompiled ``keras.Model`` registered as ``name`` (the model is named ``name``)."""
    validate_hyperparameters(name, hyperparameters)
    return _builder(name)(input_shape, num_classes, **hyperparameters)
