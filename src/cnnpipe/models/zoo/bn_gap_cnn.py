"""The tutorial's pet classifier: Conv-BN-ReLU-pool blocks and global average pooling.

Each width in ``filters`` is a block ``block{i}_conv/bn/relu/pool``; then ``gap``, ``dense``
(relu), ``dropout`` and the head. With an ``augmentation:`` entry in params.yaml it is also
the tutorial's food classifier (the ``augmented_cnn`` variant): the same layers behind
in-model random flips, rotations, zooms or contrast changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnpipe.models.registry import Architecture, plain_trunk, register_architecture
from cnnpipe.models.schema import PositiveInt, Rate, Variant, Widths


class BnGapCnn(Variant):
    architecture: Literal["bn_gap_cnn"]
    filters: Widths = Field((32, 64, 128), description="one Conv-BN-ReLU-pool block per width")
    kernel_size: PositiveInt = Field(3, description="square kernel of every conv")
    dense_units: PositiveInt = Field(128, description="the hidden dense layer after gap")
    dropout: Rate = Field(0.5, description="dropout before the head")


def _layers(x, hp, input_shape):
    from keras import layers

    from cnnpipe.models.blocks import dense_dropout, single_conv_block

    for i, width in enumerate(hp.filters, start=1):
        x = single_conv_block(x, width, hp.kernel_size, i, input_shape)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return dense_dropout(x, hp.dense_units, hp.dropout)


def _walk(walk, hp):
    for width in hp.filters:
        walk.conv_bn_relu(width, hp.kernel_size)
        walk.pool()
    walk.global_pool()
    walk.dense_dropout(hp.dense_units)


ARCHITECTURE = register_architecture(Architecture(
    name="bn_gap_cnn",
    schema=BnGapCnn,
    trunk=plain_trunk(_layers),
    walk=_walk,
    tiny={"filters": (4, 8, 8), "dense_units": 8},
    description=__doc__.strip(),
))
