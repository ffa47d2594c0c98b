"""ONNX and LiteRT files, converted from the uint8 path, and the runtimes that run them.

Neither format can take encoded images: tf2onnx maps no DecodeJpeg/DecodePng, and the
``ai-edge-litert`` wheel ships no Flex delegate, so only TFLite's builtin ops run (the
conversion is limited to them and fails, rather than writing a file that will not load).
Both are written by Keras 3's own ``model.export`` from a thin wrapper around the trained model:
input ``pixels`` (uint8 ``[-1, H, W, C]`` at the stored size), output ``probabilities``
(float32 ``[-1, classes]``, a sigmoid head's p as ``[1 - p, p]``), the names and columns of
the SavedModel's ``serving_uint8`` signature.

LiteRT comes twice: float, and dynamic-range quantized (int8 weights, float activations, no
calibration data needed; TFLite leaves tensors under 1,024 values in float).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnpipe.export.savedmodel import PIXELS_INPUT
from cnnpipe.inference import TrainedVariant

PROBABILITIES = "probabilities"
ONNX_FILE = "model.onnx"
LITERT_FLOAT_FILE = "model_float.tflite"
LITERT_QUANTIZED_FILE = "model_dynamic_range.tflite"
LITERT_SIGNATURE = "serving_default"


def probability_model(trained: TrainedVariant):
    """A Keras model: uint8 ``pixels`` -> {``probabilities``: [N, classes]}, the trained
    model's weights shared, not copied."""
    import keras

    inputs = keras.Input(trained.input_spec.shape, dtype="uint8", name=PIXELS_INPUT)
    scores = trained.model(inputs)
    if trained.num_classes == 2 and trained.model.output_shape[-1] == 1:
        scores = keras.layers.Concatenate(name=PROBABILITIES)([1.0 - scores, scores])
    wrapper = keras.Model(inputs, {PROBABILITIES: scores}, name=f"{trained.variant}_export")
    # Keras' exporters read the input signature from a model that has been called once.
    wrapper(np.zeros((1, *trained.input_spec.shape), np.uint8))
    return wrapper


def write_onnx(wrapper, path: str | Path) -> Path:
    import warnings

    from cnnpipe.core.runner import quiet_native_logs

    with quiet_native_logs(), warnings.catch_warnings():
        # Keras' tf2onnx patch probes `np.object`, which NumPy 2 warns about on every export.
        warnings.simplefilter("ignore", FutureWarning)
        wrapper.export(str(path), format="onnx", verbose=False)
    return Path(path)


def write_litert(wrapper, path: str | Path, quantized: bool) -> Path:
    import tensorflow as tf

    from cnnpipe.core.runner import quiet_native_logs

    options = {"optimizations": [tf.lite.Optimize.DEFAULT]} if quantized else {}
    with quiet_native_logs():
        wrapper.export(str(path), format="litert", verbose=False,
                       target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
                       **options)
    return Path(path)


def onnx_description(path: str | Path) -> dict:
    """Input and output names, element types and shapes (-1 for a free dimension)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values):
        return {
            value.name: {
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(
                    value.type.tensor_type.elem_type).name,
                "shape": [dim.dim_value if dim.HasField("dim_value") else -1
                          for dim in value.type.tensor_type.shape.dim],
            }
            for value in values
        }

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def litert_description(path: str | Path) -> dict:
    """The signature's input and output names, dtypes and shapes (-1 for the batch)."""
    runner = _interpreter(path).get_signature_runner(LITERT_SIGNATURE)

    def describe(details):
        return {name: {"dtype": np.dtype(detail["dtype"]).name,
                       "shape": [-1 if size < 0 else int(size)
                                 for size in detail["shape_signature"]]}
                for name, detail in details.items()}

    return {"signature": LITERT_SIGNATURE, "inputs": describe(runner.get_input_details()),
            "outputs": describe(runner.get_output_details())}


class OnnxRunner:
    """``(uint8 batch) -> float64 probabilities`` through onnxruntime on the CPU."""

    def __init__(self, path: str | Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run([PROBABILITIES], {PIXELS_INPUT: pixels})
        return probabilities.astype(np.float64)


class LiteRTRunner:
    """``(uint8 batch) -> float64 probabilities`` through the LiteRT interpreter (its
    signature runner resizes the input to each batch)."""

    def __init__(self, path: str | Path):
        self.runner = _interpreter(path).get_signature_runner(LITERT_SIGNATURE)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.runner(**{PIXELS_INPUT: pixels})[PROBABILITIES].astype(np.float64)


def _interpreter(path: str | Path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=_usable_cores())


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # the cores this process may run on (Linux)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
