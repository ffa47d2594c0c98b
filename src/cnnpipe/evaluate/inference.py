"""Load a trained variant's saved model and run batched inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnpipe.core.errors import DataError

INFERENCE_BATCH = 512


def load_trained_model(model_path: str | Path):
    """The trained model exactly as train@<variant> saved it (architecture, input adaptation
    and weights), so no code that changed since training can change what it computes."""
    import keras

    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(f"{model_path} not found; run `dvc repro` to train the model")
    return keras.saving.load_model(model_path, compile=False)


def predict_outputs(model, images, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Model outputs for raw uint8 ``images``: an array, or a tf.data stream of batches
    (labels, if it yields them, are ignored)."""
    if isinstance(images, np.ndarray):
        return np.asarray(model.predict(images, batch_size=batch_size, verbose=0))
    return np.asarray(model.predict(images, verbose=0))


def mirrored(dataset):
    """The batches of ``dataset`` (images first) with every image flipped left to right."""
    import tensorflow as tf

    return dataset.map(lambda images, *rest: (tf.reverse(images, axis=[2]), *rest))


def measure_latency(model, one_image: np.ndarray, repeats: int = 20) -> float:
    """Median seconds to classify a single image: what an interactive caller waits."""
    import time

    model(one_image, training=False)  # first call traces the graph; not part of latency
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(one_image, training=False)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))
