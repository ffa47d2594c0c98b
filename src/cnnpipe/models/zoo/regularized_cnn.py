"""The tutorial's "correct way": VGG-style blocks with BatchNorm and Dropout.

Each width in ``filters`` is a block ``block{i}_``: conv1-bn1-relu1-conv2-bn2-relu2 (same
padding), a 2x2 ``pool`` and ``dropout``. Then ``flatten``, ``dense`` (relu), ``dense_bn``,
``dense_dropout`` and the head.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnpipe.models.registry import Architecture, plain_trunk, register_architecture
from cnnpipe.models.schema import PositiveInt, Rate, Variant, Widths


class RegularizedCnn(Variant):
    architecture: Literal["regularized_cnn"]
    filters: Widths = Field((32, 64, 128), description="one VGG block per width")
    kernel_size: PositiveInt = Field(3, description="square kernel of every conv")
    conv_dropout: Rate = Field(0.25, description="dropout after each block's pool")
    dense_units: PositiveInt = Field(128, description="the hidden dense layer")
    dense_dropout: Rate = Field(0.5, description="dropout before the head")


def _layers(x, hp, input_shape):
    from keras import layers

    from cnnpipe.models.blocks import BN_MOMENTUM, vgg_block

    for i, width in enumerate(hp.filters, start=1):
        x = vgg_block(x, width, hp.kernel_size, i, input_shape)
        x = layers.Dropout(hp.conv_dropout, name=f"block{i}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(hp.dense_units, activation="relu", name="dense")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="dense_bn")(x)
    return layers.Dropout(hp.dense_dropout, name="dense_dropout")(x)


def _walk(walk, hp):
    for width in hp.filters:
        walk.conv_bn_relu(width, hp.kernel_size)
        walk.conv_bn_relu(width, hp.kernel_size)
        walk.pool()
        walk.elementwise()
    walk.flatten()
    walk.dense(hp.dense_units)
    walk.bn_relu(relu=False)
    walk.elementwise()


ARCHITECTURE = register_architecture(Architecture(
    name="regularized_cnn",
    schema=RegularizedCnn,
    trunk=plain_trunk(_layers),
    walk=_walk,
    tiny={"filters": (4, 8, 8), "dense_units": 8},
    description=__doc__.strip(),
))
