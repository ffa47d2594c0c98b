"""The classifier skeleton every architecture shares (keras' ``ResNet(stack_fn)`` pattern).

The skeleton owns what is common: the checks of the input shape and class count, the model's
own input block (:func:`cnnpipe.models.inputs.model_input`: uint8 pixels in, augmentation,
channel conversion, resize, normalization), the head and the model's name. A registration
supplies only its trunk, which takes the schema's validated settings and checks nothing again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnpipe.models.registry import ModelConfigError, check_num_classes, get_architecture


def check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, Sequence) or isinstance(input_shape, str)
        or len(input_shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)
    ):
        raise ModelConfigError(
            "`input_shape` must be 3 positive integers (height, width, channels). "
            f"Received `input_shape={input_shape!r}`"
        )
    return tuple(int(v) for v in input_shape)


def augmentation_layers_settings(settings, seed: int | None) -> dict | None:
    """The settings' augmentation as the input block takes it, seeded by the run's seed so a
    rerun augments identically."""
    augmentation = getattr(settings, "augmentation", None)
    if augmentation is None:
        return None
    return {"seed": seed, **augmentation.model_dump()}


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    preprocessing: Mapping[str, Any] | None = None,
    augmentation_seed: int | None = None,
    backbone_weights: str | Path | None = None,
    **hyperparameters: Any,
):
    """The uncompiled ``keras.Model`` of architecture ``name``, named ``name``.

    ``hyperparameters`` are validated by the architecture's schema (one line naming a bad
    key). ``backbone_weights`` (None, ``"imagenet"`` or a weights file) is what
    ``cnnpipe.train.build.init_weights`` decided; only an architecture with a backbone takes
    it.
    """
    import keras

    from cnnpipe.models.layers import classification_head
    from cnnpipe.models.inputs import check_preprocessing, model_input

    architecture = get_architecture(name)
    training = sorted(set(hyperparameters) & architecture.schema.training_keys())
    if training:
        raise ModelConfigError(
            f"`{training[0]}` is a training setting, not a hyperparameter of `{name}`"
        )
    settings = architecture.settings(hyperparameters)
    input_shape = check_input_shape(input_shape)
    num_classes = check_num_classes(num_classes)
    preprocessing = check_preprocessing(preprocessing, input_shape)
    if backbone_weights is not None and architecture.fine_tune is None:
        raise ModelConfigError(f"Architecture `{name}` has no backbone to load weights into")
    # Called before the input block: a trunk with a pretrained base builds it here, so a
    # failed download fails fast and the weights are drawn in the order they always were.
    apply_trunk = architecture.trunk(settings, backbone_weights)
    inputs, x = model_input(
        input_shape, preprocessing, augmentation_layers_settings(settings, augmentation_seed),
        **architecture.input_needs.overrides(settings),
    )
    x = apply_trunk(x, input_shape)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)
