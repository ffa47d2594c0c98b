"""Pieces every architecture shares: argument checks, augmentation, the head.

Keeping them in one place keeps the head, the loss and the augmentation layers identical
across architectures, so variants differ only where they are meant to.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from keras import layers

from cnnpipe.models.registry import ModelConfigError

PIXEL_RANGE = (0.0, 255.0)  # what augmentation sees: the stored pixels, before normalizing

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")

# Order of the augmentation layers in the model; the position also offsets each layer's
# seed, so enabling one layer does not change the random stream of another.
AUGMENTATION_KEYS = ("flip", "rotation", "zoom", "contrast", "translation", "brightness")

# Upper bounds of the augmentation factors. A zoom or translation of 1 would leave nothing of
# the image; a rotation, contrast or brightness factor of 1 is extreme but well-defined.
_FACTOR_LIMITS = {
    "rotation": (1.0, True),
    "zoom": (1.0, False),
    "contrast": (1.0, True),
    "translation": (1.0, False),
    "brightness": (1.0, True),
}


def _fail(name: str, value: Any, requirement: str) -> ModelConfigError:
    return ModelConfigError(f"`{name}` must be {requirement}. Received `{name}={value!r}`")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, Sequence)
        or isinstance(input_shape, str)
        or len(input_shape) != 3
        or not all(_is_int(v) and v > 0 for v in input_shape)
    ):
        raise _fail("input_shape", input_shape, "3 positive integers (height, width, channels)")
    return tuple(int(v) for v in input_shape)


def check_num_classes(num_classes: Any) -> int:
    if not _is_int(num_classes) or num_classes < 2:
        raise _fail("num_classes", num_classes, "an integer >= 2")
    return int(num_classes)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not _is_int(value) or value < minimum:
        requirement = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise _fail(name, value, requirement)
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    if not _is_number(value) or value <= 0:
        raise _fail(name, value, "a positive number")
    return float(value)


def check_widths(name: str, value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(_is_int(v) and v > 0 for v in value)
    ):
        raise _fail(name, value, "a non-empty list of positive integers")
    return tuple(int(v) for v in value)


def check_rate(name: str, value: Any) -> float:
    if not _is_number(value) or not 0 <= value < 1:
        raise _fail(name, value, "a number in [0, 1)")
    return float(value)


def require_window(x, window: int, layer_name: str, input_shape: tuple[int, int, int]) -> None:
    """Refuse an input that has shrunk below a valid conv or pool window before ``layer_name``.

    Keras would fail too, but deep inside the layer and with shapes instead of a remedy.
    """
    height, width = x.shape[1], x.shape[2]
    if height < window or width < window:
        raise ModelConfigError(
            f"`input_shape` is too small for this architecture: the feature map before "
            f"`{layer_name}` is {height}x{width}, smaller than its {window}x{window} window; "
            f"use larger images or fewer blocks. Received `input_shape={input_shape}`"
        )


def check_augmentation(augmentation: Any) -> dict[str, Any] | None:
    """Normalize an augmentation mapping; ``None`` or all-zero means no augmentation layers."""
    if augmentation is None:
        return None
    if not isinstance(augmentation, Mapping):
        raise _fail("augmentation", augmentation, "a mapping or null")
    known = (*AUGMENTATION_KEYS, "seed")
    for key in augmentation:
        if key not in known:
            raise ModelConfigError(
                f"Unknown augmentation key `{key}`; known: {', '.join(sorted(known))}"
            )
    checked: dict[str, Any] = {"seed": None}
    flip = augmentation.get("flip")
    if flip is False:  # YAML `flip: false` reads naturally as "no flip"
        flip = None
    if flip is not None and flip not in FLIP_MODES:
        raise _fail("augmentation.flip", flip, f"null or one of {', '.join(FLIP_MODES)}")
    checked["flip"] = flip
    for key, (limit, inclusive) in _FACTOR_LIMITS.items():
        value = augmentation.get(key, 0.0)
        if value is None:
            value = 0.0
        if not _is_number(value) or value < 0 or value > limit or (value == limit and not inclusive):
            bound = f"{limit:g}]" if inclusive else f"{limit:g})"
            raise _fail(f"augmentation.{key}", value, f"a number in [0, {bound}")
        checked[key] = float(value)
    seed = augmentation.get("seed")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise _fail("augmentation.seed", seed, "a non-negative integer or null")
    checked["seed"] = None if seed is None else int(seed)
    return checked


def augmentation_block(x, augmentation: dict[str, Any] | None):
    """Random preprocessing layers named ``augment_<key>``, on the 0-255 pixels.

    Keras runs them only when ``training=True``, so evaluation and prediction see the images
    untouched. They sit before normalization, so contrast and brightness always clip to
    :data:`PIXEL_RANGE`, whichever normalization follows. ``augmentation`` must come from
    :func:`check_augmentation`.
    """
    if not augmentation:
        return x
    base_seed = augmentation["seed"]
    for index, key in enumerate(AUGMENTATION_KEYS):
        value = augmentation[key]
        if not value:
            continue
        # One shared seed would give every layer the same random draws (correlated
        # transforms), so each layer gets its own seed derived from it.
        seed = None if base_seed is None else base_seed + index
        name = f"augment_{key}"
        if key == "flip":
            layer = layers.RandomFlip(value, seed=seed, name=name)
        elif key == "rotation":
            layer = layers.RandomRotation(value, seed=seed, name=name)
        elif key == "zoom":
            layer = layers.RandomZoom(value, value, seed=seed, name=name)
        elif key == "contrast":
            layer = layers.RandomContrast(value, value_range=PIXEL_RANGE, seed=seed, name=name)
        elif key == "translation":
            layer = layers.RandomTranslation(value, value, seed=seed, name=name)
        else:
            layer = layers.RandomBrightness(value, value_range=PIXEL_RANGE, seed=seed, name=name)
        x = layer(x)
    return x


def classification_head(x, num_classes: int):
    """Sigmoid unit for two classes, softmax otherwise; float32 so mixed precision stays stable."""
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name="predictions")(x)
    return layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)


def classification_head_loss(num_classes: int) -> str:
    """The loss matching :func:`classification_head` for integer labels."""
    num_classes = check_num_classes(num_classes)
    return "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"
