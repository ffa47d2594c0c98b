"""Does every exported file compute what ``model.keras`` computes? Measured, then bounded.

On a fixed sample of test images (evenly spaced over the prepared test split, whose order is
fixed: the same images every run), each format's class probabilities are compared with
``TrainedVariant.predict``: the largest absolute difference and the share of images whose
most probable class agrees. The quantized LiteRT file also classifies the whole test set,
streamed in batches, beside ``model.keras``. PNGs at other sizes go through the SavedModel's
decoding and resizing and are compared with ``cnnpipe predict``'s Pillow path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.core.shards import ShardSet
from cnnpipe.export.formats import LiteRTRunner, OnnxRunner
from cnnpipe.export.savedmodel import (
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
)
from cnnpipe.inference import INFERENCE_BATCH, TrainedVariant

# Largest absolute probability difference allowed against model.keras, per format: the same
# float32 graph (SavedModel, ONNX) differs only in summation order; LiteRT's kernels more.
MAX_DIFF = {"savedmodel_uint8": 1e-5, "savedmodel_images": 1e-5, "onnx": 1e-5,
            "litert_float": 1e-3}
# Smallest share of images on which the top-1 class must agree: int8 weights move
# probabilities by design, and other sizes go through TensorFlow's resize, not Pillow's.
MIN_AGREEMENT = {"litert_dynamic_range": 0.99, "other_sizes": 0.99}
ENCODE_BATCH = 64  # encoded images per SavedModel call: bounds the decoded pixels in memory


@dataclass(frozen=True)
class ExportedPaths:
    savedmodel: Path
    onnx: Path
    litert_float: Path
    litert_dynamic_range: Path


def sample_indices(count: int, wanted: int) -> np.ndarray:
    """``wanted`` record indices evenly spaced over ``count`` (all of them when fewer)."""
    return np.unique(np.linspace(0, count - 1, min(wanted, count)).round().astype(np.int64))


def agreement(reference: np.ndarray, probabilities: np.ndarray) -> dict:
    return {
        "max_abs_diff": float(np.max(np.abs(reference - probabilities), initial=0.0)),
        "top1_agreement": float(np.mean(reference.argmax(1) == probabilities.argmax(1))),
    }


def other_sizes(shape: tuple[int, int, int]) -> list[tuple[int, int]]:
    """(height, width) to re-encode the sample at: twice the side, and a non-square size that
    a crop or a stretch must change."""
    height, width = shape[:2]
    return [(2 * height, 2 * width), (round(1.5 * height), round(2.5 * width))]


def measure(trained: TrainedVariant, paths: ExportedPaths, test: ShardSet,
            parity_images: int) -> dict:
    """Every parity figure of the exported files (unchecked; :func:`check_bounds` judges)."""
    indices = sample_indices(len(test), parity_images)
    sample = test.read(indices)
    reference = trained.predict(sample)
    signatures = _load_signatures(paths.savedmodel)
    formats = {
        "savedmodel_uint8": _savedmodel_pixels(signatures[PIXELS_SIGNATURE], sample),
        "savedmodel_images": _savedmodel_images(signatures[IMAGES_SIGNATURE],
                                                [_png(image) for image in sample]),
        "onnx": OnnxRunner(paths.onnx)(sample),
        "litert_float": LiteRTRunner(paths.litert_float)(sample),
        "litert_dynamic_range": LiteRTRunner(paths.litert_dynamic_range)(sample),
    }
    return {
        "sample": {"images": len(indices), "of": len(test),
                   "chosen": "evenly spaced over the test split's fixed order"},
        "formats": {name: agreement(reference, found) for name, found in formats.items()},
        "other_sizes": [_other_size(trained, signatures[IMAGES_SIGNATURE], sample, size)
                        for size in other_sizes(trained.input_spec.shape)],
        "quantized_full_test": _full_test(trained, paths.litert_dynamic_range, test),
    }


def check_bounds(measured: dict) -> None:
    """Raise a one-line DataError naming each format, figure and bound that failed."""
    failures = []
    for name, limit in MAX_DIFF.items():
        found = measured["formats"][name]["max_abs_diff"]
        if not found <= limit:
            failures.append(f"{name} largest probability difference {found:.3g} > {limit:g}")
    quantized = measured["formats"]["litert_dynamic_range"]["top1_agreement"]
    if not quantized >= MIN_AGREEMENT["litert_dynamic_range"]:
        failures.append(f"litert_dynamic_range top-1 agreement {quantized:.4f} < "
                        f"{MIN_AGREEMENT['litert_dynamic_range']:g}")
    for size in measured["other_sizes"]:
        if not size["top1_agreement"] >= MIN_AGREEMENT["other_sizes"]:
            failures.append(f"savedmodel_images at {size['size']} top-1 agreement "
                            f"{size['top1_agreement']:.4f} < {MIN_AGREEMENT['other_sizes']:g}")
    if failures:
        raise DataError(f"export parity out of bounds (nothing written): {'; '.join(failures)}")


def _load_signatures(folder: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(folder)).signatures


def _savedmodel_pixels(signature, pixels: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    outputs = signature(**{PIXELS_INPUT: tf.constant(pixels)})
    return outputs["probabilities"].numpy().astype(np.float64)


def _savedmodel_images(signature, encoded: list[bytes]) -> np.ndarray:
    import tensorflow as tf

    parts = [signature(**{IMAGES_INPUT: tf.constant(encoded[start:start + ENCODE_BATCH])})
             ["probabilities"].numpy() for start in range(0, len(encoded), ENCODE_BATCH)]
    return np.concatenate(parts).astype(np.float64)


def _png(pixels: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """PNG bytes of uint8 (H, W, C) pixels, resized first (Pillow bilinear) to ``size``."""
    from PIL import Image

    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    if size is not None:
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _other_size(trained: TrainedVariant, signature, sample: np.ndarray,
                size: tuple[int, int]) -> dict:
    """The SavedModel's own decoding and fitting against ``cnnpipe predict``'s, on the sample
    re-encoded at ``size``."""
    from cnnpipe.predict import read_image

    spec = trained.input_spec
    encoded = [_png(image, size) for image in sample]
    fitted = np.stack([read_image(png, spec.shape, spec.crop_to_aspect_ratio)
                       for png in encoded])
    found = agreement(trained.predict(fitted), _savedmodel_images(signature, encoded))
    return {"size": f"{size[0]}x{size[1]}", "images": len(encoded), **found}


def _full_test(trained: TrainedVariant, quantized: Path, test: ShardSet) -> dict:
    """Accuracy of ``model.keras`` and of the quantized LiteRT file on every test image,
    a batch at a time (never the whole split in memory)."""
    run_quantized = LiteRTRunner(quantized)
    keras_right = quantized_right = agreeing = 0
    for images, labels in test.iter_batches(INFERENCE_BATCH):
        keras_top = trained.predict(images).argmax(1)
        quantized_top = run_quantized(images).argmax(1)
        keras_right += int(np.sum(keras_top == labels))
        quantized_right += int(np.sum(quantized_top == labels))
        agreeing += int(np.sum(keras_top == quantized_top))
    count = max(len(test), 1)
    return {
        "images": len(test),
        "keras_accuracy": keras_right / count,
        "litert_dynamic_range_accuracy": quantized_right / count,
        "accuracy_change": (quantized_right - keras_right) / count,
        "top1_agreement": agreeing / count,
    }
