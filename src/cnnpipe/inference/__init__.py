"""Inference on a trained variant: ``models/<variant>`` loaded as one checked object.

:class:`TrainedVariant` joins the saved model and its model card, refuses a pair that
disagrees, and turns uint8 batches into class probabilities. Evaluate, Grad-CAM and
``cnnpipe predict`` all go through it, so each of them sees the same model the same way.
TensorFlow is imported only when a model is loaded or run: importing this package is cheap.
"""

from cnnpipe.inference.batches import (
    INFERENCE_BATCH,
    as_class_probabilities,
    measure_latency,
    mirrored,
)
from cnnpipe.inference.trained import CARD_NAME, MODEL_NAME, InputSpec, TrainedVariant

__all__ = [
    "CARD_NAME",
    "INFERENCE_BATCH",
    "MODEL_NAME",
    "InputSpec",
    "TrainedVariant",
    "as_class_probabilities",
    "measure_latency",
    "mirrored",
]
