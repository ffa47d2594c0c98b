"""A trained variant: ``models/<variant>/model.keras`` with the model card written beside it.

The card alone decides what the model takes (uint8 pixels of ``raw_image_shape``) and what
its outputs mean (``class_names``); nothing is taken from params or code that may have
changed since training. A card and a model from different runs are refused at load time, in
one line, rather than failing later with Keras' shape traceback or naming the wrong classes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.core import layout
from cnnpipe.core.errors import ConfigError, DataError
from cnnpipe.core.model_card import ModelCard
from cnnpipe.inference.batches import INFERENCE_BATCH, as_class_probabilities

CARD_NAME = layout.CARD_FILE
MODEL_NAME = layout.MODEL_FILE


@dataclass(frozen=True)
class InputSpec:
    """What one model input is: uint8 pixels ``shape`` (H, W, C), and how image files were
    fitted to that size in training (centre crop or stretch)."""

    shape: tuple[int, int, int]
    crop_to_aspect_ratio: bool = False
    dtype: str = "uint8"

    @classmethod
    def from_card(cls, card: ModelCard) -> InputSpec:
        """What ``card``'s model takes; read from the card alone, before any model loads."""
        loading = card.image_loading
        return cls(
            shape=tuple(card.raw_image_shape),
            # null for array sources: no file was fitted, so files are stretched as Keras does
            crop_to_aspect_ratio=loading is not None and loading.crop_to_aspect_ratio,
        )

    def check_batch(self, batch: np.ndarray) -> None:
        if batch.dtype != self.dtype or batch.shape[1:] != self.shape:
            raise self._refusal(f"got {batch.dtype} {batch.shape}")

    def check_dataset(self, dataset) -> None:
        spec = dataset.element_spec
        images = spec[0] if isinstance(spec, tuple) else spec
        if images.dtype.name != self.dtype or not images.shape[1:].is_compatible_with(self.shape):
            raise self._refusal(f"the dataset yields {images.dtype.name} {tuple(images.shape)}")

    def _refusal(self, got: str) -> DataError:
        dims = ", ".join(map(str, self.shape))
        return DataError(f"the model takes {self.dtype} batches of shape (N, {dims}); {got}")


@dataclass(frozen=True)
class TrainedVariant:
    """A loaded ``models/<variant>`` folder: its card, its model, checked against each other."""

    variant: str
    card: ModelCard
    model: Any  # keras.Model

    @classmethod
    def load(cls, folder: str | Path) -> TrainedVariant:
        """Read ``folder/model_card.json`` and load ``folder/model.keras``.

        Raises :class:`ConfigError` in one line: a card that is missing, damaged or of
        another card version; a missing or corrupt model; a card and model from different
        runs. The card is read first, so an old card is refused before TensorFlow loads.
        """
        folder = Path(folder)
        card_path, model_path = folder / CARD_NAME, folder / MODEL_NAME
        card = ModelCard.read(card_path)
        model = _load_model(model_path)
        _check_card_matches_model(model, card, card_path, model_path)
        return cls(variant=folder.name, card=card, model=model)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.card.class_names

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_card(self.card)

    def predict(self, images, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        """Class probabilities (N, num_classes), float64, for raw uint8 ``images``.

        ``images`` is an (N, H, W, C) array or a tf.data dataset of such batches (labels, if
        it yields them, are ignored). A sigmoid head's p becomes the columns [1 - p, p].
        """
        if isinstance(images, np.ndarray):
            self.input_spec.check_batch(images)
            if len(images) == 0:
                return np.zeros((0, self.num_classes))
            outputs = self.model.predict(images, batch_size=batch_size, verbose=0)
        else:
            self.input_spec.check_dataset(images)
            outputs = self.model.predict(images, verbose=0)
        return as_class_probabilities(outputs)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """:meth:`predict` for one uint8 batch held in memory, through a traced graph.

        Keras' ``predict`` builds a data pipeline and a step loop on every call, tens of
        milliseconds that dominate a server's small batches. This calls the model once in a
        ``tf.function`` traced once for every batch size (the batch dimension is ``None``), so
        the first call pays the trace and later calls pay only the computation. The
        probabilities are those of :meth:`predict`.
        """
        self.input_spec.check_batch(images)
        if len(images) == 0:
            return np.zeros((0, self.num_classes))
        return as_class_probabilities(self._traced_forward(images).numpy())

    @cached_property
    def _traced_forward(self):
        import tensorflow as tf

        model = self.model
        pixels = tf.TensorSpec((None, *self.input_spec.shape), tf.uint8, name="pixels")

        @tf.function(input_signature=[pixels])
        def forward(batch):
            return model(batch, training=False)

        return forward


def _load_model(model_path: Path):
    import zipfile

    import keras

    if not model_path.is_file():
        raise ConfigError(f"{model_path} not found; `dvc repro` trains it")
    # Keras reports a damaged archive as "File not found" about a file that exists.
    if not zipfile.is_zipfile(model_path):
        raise ConfigError(f"{model_path} is corrupt (not a complete .keras archive, truncated or "
                          "overwritten?): restore it with `dvc checkout` or retrain (dvc repro)")
    # Held back until loading succeeds: a refused file gets one line, not Keras' warnings too.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # The model exactly as train@<variant> saved it (input adaptation included), so
            # no code that changed since training can change what it computes.
            model = keras.saving.load_model(model_path, compile=False)
        except (ValueError, TypeError, OSError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"cannot load {model_path}: {first}") from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    return model


def _check_card_matches_model(model, card: ModelCard, card_path: Path, model_path: Path) -> None:
    """A card from another run than its model would feed it the wrong pixels or name the
    wrong classes."""
    raw_shape = card.raw_image_shape
    takes = tuple(model.input_shape[1:])
    if len(takes) != len(raw_shape) or any(t not in (None, r) for t, r in zip(takes, raw_shape)):
        shown = "x".join("?" if t is None else str(t) for t in takes)
        raise ConfigError(
            f"{card_path} says the model takes {'x'.join(map(str, raw_shape))} images, but "
            f"{model_path} takes {shown}: the two are from different runs; retrain (dvc repro)")
    units = model.output_shape[-1]
    if units != (1 if card.num_classes == 2 else card.num_classes):
        raise ConfigError(
            f"{card_path} names {card.num_classes} classes, but {model_path} has {units} "
            "outputs: the two are from different runs; retrain (dvc repro)")
