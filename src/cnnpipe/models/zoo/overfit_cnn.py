"""The tutorial's "wrong way" baseline: wide valid convs, one pool, a huge dense layer.

No BatchNorm and no Dropout on purpose: it exists to show overfitting. Layers: ``conv{i}``
for each width in ``filters``, ``pool``, ``flatten``, ``dense`` and the head.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnpipe.models.registry import Architecture, plain_trunk, register_architecture
from cnnpipe.models.schema import PositiveInt, Variant, Widths


class OverfitCnn(Variant):
    architecture: Literal["overfit_cnn"]
    filters: Widths = Field((512, 512), description="one valid conv per width, no pooling between")
    kernel_size: PositiveInt = Field(3, description="square kernel of every conv")
    dense_units: PositiveInt = Field(1000, description="the over-sized dense layer")


def _layers(x, hp, input_shape):
    from keras import layers

    from cnnpipe.models.blocks import max_pool, valid_conv

    for i, width in enumerate(hp.filters, start=1):
        x = valid_conv(x, width, hp.kernel_size, f"conv{i}", input_shape)
    x = max_pool(x, "pool", input_shape)
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(hp.dense_units, activation="relu", name="dense")(x)


def _walk(walk, hp):
    for width in hp.filters:
        walk.conv(width, hp.kernel_size, padding="valid", activation=True)
    walk.pool()
    walk.flatten()
    walk.dense(hp.dense_units)


ARCHITECTURE = register_architecture(Architecture(
    name="overfit_cnn",
    schema=OverfitCnn,
    trunk=plain_trunk(_layers),
    walk=_walk,
    tiny={"filters": (8, 8), "dense_units": 16},
    description=__doc__.strip(),
))
