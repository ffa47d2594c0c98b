"""Model-independent helpers for running batches: output conversion, test-time mirroring,
latency."""

from __future__ import annotations

import numpy as np

INFERENCE_BATCH = 512


def as_class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """(N, 1) sigmoid outputs -> (N, 2) probabilities; softmax outputs pass through."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


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
