"""What the model's input layers must do to the prepared uint8 images: size, channels and
normalization, with statistics fitted on the training split only.

Nothing here converts the data: the model does resize, channel conversion and normalization
itself, as Keras layers built from ``data/processed/preprocessing.json``, so evaluation and
the predict command apply exactly what training saw. This module only streams the training
shards once (for ``standardize``) to measure the per-channel mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.core.pixels import LUMA
from cnnpipe.core.shards import ShardSet

PIXEL_SCALE = 255  # mean and std are on the 0-255 scale of the stored pixels
# Bounds the working memory of one batch (its uint8 pixels, or their float64 copy for luma).
_BATCH_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Preprocessing:
    image_size: tuple[int, int]  # (height, width) the model sees
    channels: int  # of the model input, after any conversion
    normalization: str  # unit | symmetric | standardize
    mean: tuple[float, ...] | None = None  # per model-input channel, 0-255 scale (standardize)
    std: tuple[float, ...] | None = None
    scale: int = PIXEL_SCALE
    prepared_channels: int | None = None  # of the stored images; differs when converted

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    @property
    def channel_conversion(self) -> str | None:
        if self.prepared_channels is None or self.prepared_channels == self.channels:
            return None
        return "rgb_to_gray_luma" if self.channels == 1 else "gray_to_rgb_replicate"

    def to_dict(self) -> dict:
        raw = asdict(self)
        raw["image_size"] = list(self.image_size)
        for key in ("mean", "std"):
            raw[key] = None if raw[key] is None else list(raw[key])
        raw["channel_conversion"] = self.channel_conversion
        return raw


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(B, H, W, C) pixels as float64 with ``channels`` channels (luma or replication)."""
    x = images.astype(np.float64)
    if x.shape[-1] == channels:
        return x
    if x.shape[-1] == 3 and channels == 1:
        return (x @ np.array(LUMA))[..., None]
    if x.shape[-1] == 1 and channels == 3:
        return np.repeat(x, 3, axis=-1)
    raise DataError(f"cannot convert {x.shape[-1]}-channel images to {channels} channels")


def channel_statistics(
    train: ShardSet, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0-255 scale) of ``train`` as the model input would see it.

    One pass in bounded batches. Without a luma conversion the statistics come from exact
    per-channel histograms of the 256 pixel values (integer counts: no rounding, and several
    times faster than converting every pixel to float); with one, from float64 running sums.
    The statistics are taken at the stored size: resizing happens later inside the model and
    changes them only by the slight smoothing of its resampling filter, which is ignored.
    """
    if len(train) == 0:
        raise DataError(f"{train.directory} holds no images to fit the normalization on")
    height, width, stored = train.image_shape
    values = len(train) * height * width
    if stored == 3 and channels == 1:
        batch = max(1, _BATCH_BYTES // (8 * height * width * stored))
        total = squares = 0.0
        for images, _ in train.iter_batches(batch):
            x = convert_channels(images, 1)
            total += float(x.sum())
            np.square(x, out=x)
            squares += float(x.sum())
        mean = np.array([total / values])
        variance = np.maximum(np.array([squares / values]) - mean**2, 0.0)
    else:
        counts = np.zeros((stored, 256), np.int64)
        batch = max(1, _BATCH_BYTES // (height * width * stored))
        for images, _ in train.iter_batches(batch):
            for channel in range(stored):
                counts[channel] += np.bincount(images[..., channel].reshape(-1), minlength=256)
        levels = np.arange(256, dtype=np.float64)
        mean = counts @ levels / values
        variance = counts @ levels**2 / values - mean**2
        if stored == 1 and channels == 3:
            mean, variance = np.repeat(mean, 3), np.repeat(variance, 3)
        elif stored != channels:
            raise DataError(f"cannot convert {stored}-channel images to {channels} channels")
    # A constant channel would divide by zero; 1e-7 keeps it finite and visibly degenerate.
    std = np.maximum(np.sqrt(np.maximum(variance, 0.0)), 1e-7)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def fit_preprocessing(
    train: ShardSet, image_size: int | None, channels: int | None, normalization: str
) -> Preprocessing:
    """The model-input settings for the prepared ``train`` split.

    ``image_size`` None keeps the stored size, ``channels`` None the stored channels.
    """
    stored_height, stored_width, stored_channels = train.image_shape
    size = (image_size, image_size) if image_size else (stored_height, stored_width)
    channels = channels or stored_channels
    mean = std = None
    if normalization == "standardize":
        mean, std = channel_statistics(train, channels)
    return Preprocessing(size, channels, normalization, mean, std, PIXEL_SCALE, stored_channels)
