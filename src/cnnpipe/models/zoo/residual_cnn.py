"""The tutorial's medical image analyzer: a stem, one residual block, then VGG blocks.

Layers: ``stem_conv/bn/relu``; ``res_conv1/bn1/relu1/conv2/bn2``, a 1x1 ``res_shortcut``
(+``res_shortcut_bn``) only when ``residual_filters`` differs from ``stem_filters``,
``res_add``, ``res_relu``; one ``block{i}_`` (two Conv-BN-ReLU and a 2x2 pool) per width in
``block_filters``; ``gap``, ``dense`` (relu), ``dropout`` and the head.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnpipe.models.registry import Architecture, plain_trunk, register_architecture
from cnnpipe.models.schema import PositiveInt, Rate, Variant, Widths


class ResidualCnn(Variant):
    architecture: Literal["residual_cnn"]
    stem_filters: PositiveInt = Field(64, description="width of the stem conv")
    stem_kernel: PositiveInt = Field(3, description="stem kernel; 3 suits small images where "
                                     "ResNet uses 7")
    stem_strides: PositiveInt = Field(1, description="2 halves the resolution, as ResNet's stem")
    residual_filters: PositiveInt = Field(64, description="width of the residual block")
    block_filters: Widths = Field((128, 256), description="one VGG block per width")
    kernel_size: PositiveInt = Field(3, description="kernel of the residual and VGG convs")
    dense_units: PositiveInt = Field(256, description="the hidden dense layer after gap")
    dropout: Rate = Field(0.5, description="dropout before the head")


def _layers(x, hp, input_shape):
    from keras import layers

    from cnnpipe.models.blocks import conv_bn_relu, dense_dropout, residual_block, vgg_block

    x = conv_bn_relu(x, hp.stem_filters, hp.stem_kernel, "stem_", strides=hp.stem_strides)
    x = residual_block(x, hp.residual_filters, hp.kernel_size)
    for i, width in enumerate(hp.block_filters, start=1):
        x = vgg_block(x, width, hp.kernel_size, i, input_shape)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return dense_dropout(x, hp.dense_units, hp.dropout)


def _walk(walk, hp):
    walk.conv_bn_relu(hp.stem_filters, hp.stem_kernel, hp.stem_strides)
    block_in = walk.c
    walk.conv_bn_relu(hp.residual_filters, hp.kernel_size)
    walk.conv(hp.residual_filters, hp.kernel_size, bias=False)
    walk.bn_relu(relu=False)
    if block_in != hp.residual_filters:
        walk.params += block_in * walk.c + 4 * walk.c
        walk.store(2)  # the 1x1 projection and its BatchNorm
    walk.elementwise(2)  # add, relu
    for width in hp.block_filters:
        walk.conv_bn_relu(width, hp.kernel_size)
        walk.conv_bn_relu(width, hp.kernel_size)
        walk.pool()
    walk.global_pool()
    walk.dense_dropout(hp.dense_units)


ARCHITECTURE = register_architecture(Architecture(
    name="residual_cnn",
    schema=ResidualCnn,
    trunk=plain_trunk(_layers),
    walk=_walk,
    tiny={"stem_filters": 4, "residual_filters": 8, "block_filters": (8, 8),
          "dense_units": 8},
    description=__doc__.strip(),
))
