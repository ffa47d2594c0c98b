"""Resize, channel conversion and normalization, fitted on the training split only.

The fitted :class:`Preprocessing` is saved next to the data and the models, so evaluation and
the predict command apply exactly what training saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cnnpipe.core.errors import DataError

# ITU-R BT.601 luma, the weights PIL uses for mode "L".
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_BATCH = 4096  # bounds the float32 working memory of a resize


@dataclass(frozen=True)
class Preprocessing:
    image_size: tuple[int, int]  # (height, width) the model sees
    channels: int
    normalization: str  # unit | symmetric | standardize
    mean: tuple[float, ...] | None = None  # per channel, on the [0, 1] scale (standardize)
    std: tuple[float, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    @property
    def value_range(self) -> tuple[float, float]:
        """Range of the normalized pixels: augmentation and MobileNet rescaling need it."""
        if self.normalization == "unit":
            return (0.0, 1.0)
        if self.normalization == "symmetric":
            return (-1.0, 1.0)
        mean, std = np.array(self.mean), np.array(self.std)
        return (float(np.min(-mean / std)), float(np.max((1 - mean) / std)))

    def to_dict(self) -> dict:
        # value_range is saved too: train builds augmentation and MobileNet's rescaling from
        # the saved value, so a change to how it is computed reaches train through this file.
        return {**asdict(self), "value_range": list(self.value_range)}

    @classmethod
    def from_dict(cls, raw: dict) -> "Preprocessing":
        return cls(
            image_size=tuple(raw["image_size"]),
            channels=int(raw["channels"]),
            normalization=raw["normalization"],
            mean=tuple(raw["mean"]) if raw.get("mean") is not None else None,
            std=tuple(raw["std"]) if raw.get("std") is not None else None,
        )


def _to_unit_float(images: np.ndarray, image_size: tuple[int, int], channels: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 in [0, 1] at ``image_size`` with ``channels`` channels."""
    if images.ndim != 4:
        raise DataError(f"expected images shaped (N, H, W, C), got {images.shape}")
    x = images.astype(np.float32) / 255.0
    if x.shape[-1] == 4:  # RGBA that reached here: drop alpha (folders composite it earlier)
        x = x[..., :3]
    if x.shape[-1] == 3 and channels == 1:
        x = (x @ _LUMA)[..., None]
    elif x.shape[-1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=-1)
    if tuple(x.shape[1:3]) != tuple(image_size):
        import tensorflow as tf

        x = np.concatenate(
            [
                tf.image.resize(x[i : i + _BATCH], image_size, antialias=True).numpy()
                for i in range(0, len(x), _BATCH)
            ]
        )
        np.clip(x, 0.0, 1.0, out=x)
    return x


def fit_preprocessing(
    train_images: np.ndarray, image_size: int | None, channels: int, normalization: str
) -> Preprocessing:
    size = (image_size, image_size) if image_size else tuple(train_images.shape[1:3])
    mean = std = None
    if normalization == "standardize":
        x = _to_unit_float(train_images, size, channels)
        mean = tuple(float(m) for m in x.mean(axis=(0, 1, 2)))
        # A constant channel would divide by zero; 1e-7 keeps it finite and visibly degenerate.
        std = tuple(max(float(s), 1e-7) for s in x.std(axis=(0, 1, 2)))
    return Preprocessing(size, channels, normalization, mean, std)


def apply_preprocessing(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    x = _to_unit_float(images, prep.image_size, prep.channels)
    if prep.normalization == "symmetric":
        x = x * 2.0 - 1.0
    elif prep.normalization == "standardize":
        x = (x - np.array(prep.mean, np.float32)) / np.array(prep.std, np.float32)
    return x.astype(np.float32, copy=False)
