"""The tutorial's first CNN: valid 3x3 convs with a 2x2 max-pool between them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnpipe.models.registry import Architecture, plain_trunk, register_architecture
from cnnpipe.models.schema import PositiveInt, Variant, Widths


class SimpleCnn(Variant):
    architecture: Literal["simple_cnn"]
    filters: Widths = Field((32, 64, 64), description="widths of conv1, conv2, ...; a pool "
                            "follows every conv but the last")
    kernel_size: PositiveInt = Field(3, description="square kernel of every conv")
    dense_units: PositiveInt = Field(64, description="the hidden dense layer before the head")


def _layers(x, hp, input_shape):
    from keras import layers

    from cnnpipe.models.blocks import max_pool, valid_conv

    for i, width in enumerate(hp.filters, start=1):
        x = valid_conv(x, width, hp.kernel_size, f"conv{i}", input_shape)
        if i < len(hp.filters):
            x = max_pool(x, f"pool{i}", input_shape)
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(hp.dense_units, activation="relu", name="dense")(x)


def _walk(walk, hp):
    for i, width in enumerate(hp.filters, start=1):
        walk.conv(width, hp.kernel_size, padding="valid", activation=True)
        if i < len(hp.filters):
            walk.pool()
    walk.flatten()
    walk.dense(hp.dense_units)


ARCHITECTURE = register_architecture(Architecture(
    name="simple_cnn",
    schema=SimpleCnn,
    trunk=plain_trunk(_layers),
    walk=_walk,
    tiny={"filters": (4, 8, 8), "dense_units": 8},
    description=__doc__.strip(),
))
