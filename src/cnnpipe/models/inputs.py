"""The model's own input pipeline: raw uint8 pixels in, the trunk's normalized tensor out.

Every architecture starts with :func:`model_input`, so a saved model classifies an image as
prepare stored it (uint8, the stored size and channels) and nothing outside the model has to
repeat the resize, channel conversion or normalization it was trained with. The constants
(size, channels, normalization statistics) come from ``data/processed/preprocessing.json``
and are saved in the layers' configs. Only built-in Keras layers are used, so the model loads
in a process that imports keras alone.

Order of the layers: ``pixels_to_float`` (the cast), the ``augment_*`` layers on the 0-255
pixels (active only in training), ``rgb_to_gray`` / ``gray_to_rgb``, ``resize``, ``normalize``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers

from cnnpipe.core.pixels import LUMA
from cnnpipe.models.layers import augmentation_block
from cnnpipe.models.registry import ModelConfigError

NORMALIZATIONS = ("unit", "symmetric", "standardize")



def check_preprocessing(preprocessing: Any, input_shape: tuple[int, int, int]) -> dict:
    """Normalize ``preprocessing`` (the preprocess stage's settings) or refuse it in one line.

    ``None`` means: keep the stored size and channels, scale pixels to [0, 1].
    """
    if input_shape[-1] not in (1, 3):
        raise ModelConfigError(
            "`input_shape` must have 1 (grayscale) or 3 (RGB) channels. "
            f"Received `input_shape={input_shape}`"
        )
    if preprocessing is None:
        preprocessing = {}
    if not isinstance(preprocessing, Mapping):
        raise ModelConfigError(
            f"`preprocessing` must be a mapping or None. Received `preprocessing={preprocessing!r}`"
        )
    size = preprocessing.get("image_size") or input_shape[:2]
    if (
        not isinstance(size, Sequence) or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size)
    ):
        raise ModelConfigError(
            f"`preprocessing.image_size` must be two positive integers. Received `{size!r}`"
        )
    channels = preprocessing.get("channels") or input_shape[-1]
    if channels not in (1, 3):
        raise ModelConfigError(
            f"`preprocessing.channels` must be 1 or 3. Received `channels={channels!r}`"
        )
    normalization = preprocessing.get("normalization", "unit")
    if normalization not in NORMALIZATIONS:
        raise ModelConfigError(
            f"`preprocessing.normalization` must be one of {', '.join(NORMALIZATIONS)}. "
            f"Received `normalization={normalization!r}`"
        )
    mean = std = None
    if normalization == "standardize":
        mean, std = preprocessing.get("mean"), preprocessing.get("std")
        for name, values in (("mean", mean), ("std", std)):
            if (
                not isinstance(values, Sequence) or len(values) != channels
                or not all(np.isfinite(v) for v in values)
            ):
                raise ModelConfigError(
                    f"`preprocessing.{name}` must hold {channels} finite numbers (one per "
                    f"channel, 0-255 scale) for standardize. Received `{name}={values!r}`"
                )
        if min(std) <= 0:
            raise ModelConfigError(f"`preprocessing.std` must be positive. Received `std={std}`")
        mean, std = [float(v) for v in mean], [float(v) for v in std]
    return {
        "image_size": (int(size[0]), int(size[1])),
        "channels": int(channels),
        "normalization": normalization,
        "mean": mean,
        "std": std,
    }


def model_input(
    input_shape: tuple[int, int, int],
    preprocessing: dict,
    augmentation: dict | None,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    normalization: str | None = None,
):
    """``(inputs, x)``: the uint8 ``image`` input and the normalized tensor the trunk takes.

    ``preprocessing`` comes from :func:`check_preprocessing`. An architecture with fixed
    needs passes them as overrides (MobileNetV2: 3 channels, its own size, [-1, 1]); the
    standardize statistics then no longer apply and are refused.
    """
    size = tuple(image_size or preprocessing["image_size"])
    channels = channels or preprocessing["channels"]
    normalization = normalization or preprocessing["normalization"]
    if normalization == "standardize" and channels != preprocessing["channels"]:
        raise ModelConfigError(
            "standardize statistics were fitted for "
            f"{preprocessing['channels']} channel(s); this architecture needs {channels}"
        )

    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="pixels_to_float")(inputs)
    x = augmentation_block(x, augmentation)
    stored = input_shape[-1]
    if stored == 3 and channels == 1:
        # A frozen Dense over the channel axis is the luma dot product; built-in, so it
        # saves and loads without custom objects (a Lambda would not).
        to_gray = layers.Dense(1, use_bias=False, trainable=False, name="rgb_to_gray")
        x = to_gray(x)
        to_gray.set_weights([np.array(LUMA, dtype="float32").reshape(3, 1)])
    elif stored == 1 and channels == 3:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if tuple(input_shape[:2]) != size:
        # Antialiasing averages large photos down instead of aliasing them.
        x = layers.Resizing(*size, antialias=True, name="resize")(x)
    if normalization == "unit":
        x = layers.Rescaling(1.0 / 255.0, name="normalize")(x)
    elif normalization == "symmetric":
        x = layers.Rescaling(2.0 / 255.0, offset=-1.0, name="normalize")(x)
    else:
        x = layers.Normalization(
            mean=preprocessing["mean"],
            variance=[s * s for s in preprocessing["std"]],
            name="normalize",
        )(x)
    return inputs, x
