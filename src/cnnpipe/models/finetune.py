"""Freezing and unfreezing the backbone an architecture's :class:`FineTuneSplit` names."""

from __future__ import annotations

from typing import Literal

from cnnpipe.models.registry import FineTuneSplit, ModelConfigError

BatchNormPolicy = Literal["frozen", "train"]


def find_backbone(model, name: str):
    """The nested model called ``name`` inside ``model`` (searched recursively), or None."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if layer.name == name:
                return layer
            found = find_backbone(layer, name)
            if found is not None:
                return found
    return None


def set_base_trainable(model, trainable_top_layers: int, split: FineTuneSplit | None,
                       batchnorm: BatchNormPolicy = "frozen") -> None:
    """Unfreeze the top ``trainable_top_layers`` weighted layers of the backbone for fine-tuning.

    Counting covers only layers that have weights and are not BatchNormalization; a count
    above their number unfreezes all of them; 0 freezes the whole base again (a no-op for a
    model without a backbone). With ``batchnorm="frozen"`` every BatchNormalization layer
    keeps its statistics: batch statistics of a few images would wreck ones pretrained on
    other data. With ``"train"`` those above the lowest unfrozen layer train with it: a base
    pretrained on these same images has nothing to protect, and frozen statistics let
    fine-tuning drive the top activations into saturation (measured in bench/RESULTS.md,
    "Small folders"). Recompile the model afterwards for the change to take effect.
    """
    from keras import layers

    if trainable_top_layers < 0:
        raise ModelConfigError(
            f"`trainable_top_layers` must be >= 0. Received `trainable_top_layers={trainable_top_layers}`"
        )
    base = find_backbone(model, split.backbone) if split is not None else None
    if base is None:
        if trainable_top_layers == 0:
            return
        raise ModelConfigError(
            f"Model `{model.name}` has no pretrained backbone to fine-tune. "
            f"Received `trainable_top_layers={trainable_top_layers}`"
        )
    if trainable_top_layers == 0:
        base.trainable = False
        return
    # Setting the base trainable first flips every nested layer; then re-freeze the rest.
    base.trainable = True
    candidates = [
        layer for layer in base.layers
        if layer.weights and not isinstance(layer, layers.BatchNormalization)
    ]
    unfrozen = candidates[-trainable_top_layers:]
    lowest = base.layers.index(unfrozen[0])
    trained = {id(layer) for layer in unfrozen}
    if batchnorm == "train":
        trained |= {id(layer) for layer in base.layers[lowest:]
                    if isinstance(layer, layers.BatchNormalization)}
    for layer in base.layers:
        layer.trainable = id(layer) in trained
