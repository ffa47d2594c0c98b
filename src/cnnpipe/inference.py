"""Rebuild a trained variant from its model card and weights, and run batched inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnpipe.errors import DataError
from cnnpipe.preprocessing import Preprocessing

INFERENCE_BATCH = 512


def load_trained_model(card: dict, weights_path: str | Path):
    """The variant's architecture with its trained weights.

    Rebuilt from the model card rather than loaded from the ``.keras`` archive so that
    downstream stages depend on the byte-stable weights file only.
    """
    from cnnpipe.models import build_model

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise DataError(f"{weights_path} not found; run `dvc repro` to train the model")
    prep = Preprocessing.from_dict(card["preprocessing"])
    hyperparameters = dict(card["hyperparameters"])
    if "weights" in hyperparameters:
        # The trained weights file below holds every weight; don't fetch a backbone again.
        hyperparameters["weights"] = "none"
    model = build_model(
        card["architecture"], prep.input_shape, card["num_classes"],
        value_range=prep.value_range, **hyperparameters,
    )
    model.load_weights(weights_path)
    return model


def predict_outputs(model, images: np.ndarray, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0))


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
