"""Pieces every architecture shares: augmentation and the head.

Keeping them in one place keeps the head, the loss and the augmentation layers identical
across architectures, so variants differ only where they are meant to.
"""

from __future__ import annotations

from typing import Any

from keras import layers

PIXEL_RANGE = (0.0, 255.0)  # what augmentation sees: the stored pixels, before normalizing

# Order of the augmentation layers in the model; the position also offsets each layer's
# seed, so enabling one layer does not change the random stream of another.
AUGMENTATION_KEYS = ("flip", "rotation", "zoom", "contrast", "translation", "brightness")


def augmentation_block(x, augmentation: dict[str, Any] | None):
    """Random preprocessing layers named ``augment_<key>``, on the 0-255 pixels.

    Keras runs them only when ``training=True``, so evaluation and prediction see the images
    untouched. They sit before normalization, so contrast and brightness always clip to
    :data:`PIXEL_RANGE`, whichever normalization follows. ``augmentation`` is the schema's
    validated settings as a dict, plus ``seed``.
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
