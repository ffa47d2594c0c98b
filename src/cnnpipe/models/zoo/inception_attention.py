"""Inception modules, each followed by channel attention.

A ``stem_conv/bn/relu`` layer; one inception module per entry of ``inception_filters`` (its
base width w: branches 1x1 (w), 1x1 (3w/2) -> 3x3 (2w), 1x1 (w/4) -> 5x5 (w/2) and 3x3
max-pool -> 1x1 (w/2), GoogLeNet module 3a's ratios, concatenated to about 4w channels;
layers ``inception{i}_1x1`` ... ``inception{i}_concat``), each followed by CBAM channel
attention ``attention{i}_`` (Grad-CAM's layer is ``attention{i}_scale``). A 2x2 ``pool{i}``
sits between modules; ``gap`` and ``dropout`` precede the head.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cnnpipe.models.registry import Architecture, plain_trunk, register_architecture
from cnnpipe.models.schema import PositiveInt, Rate, Variant, Widths


class InceptionAttention(Variant):
    architecture: Literal["inception_attention"]
    stem_filters: PositiveInt = Field(32, description="width of the stem conv")
    stem_kernel: PositiveInt = Field(3, description="stem kernel")
    stem_strides: PositiveInt = Field(1, description="2 halves the resolution the modules see")
    inception_filters: Widths = Field((32, 64), description="one module per base width")
    attention_ratio: PositiveInt = Field(8, description="channel reduction of the attention MLP")
    dropout: Rate = Field(0.4, description="before the head (GoogLeNet's rate)")


def _layers(x, hp, input_shape):
    from keras import layers

    from cnnpipe.models.blocks import channel_attention, conv_bn_relu, inception_module, max_pool

    x = conv_bn_relu(x, hp.stem_filters, hp.stem_kernel, "stem_", strides=hp.stem_strides)
    for i, width in enumerate(hp.inception_filters, start=1):
        if i > 1:
            x = max_pool(x, f"pool{i - 1}", input_shape)
        x = inception_module(x, width, f"inception{i}_")
        x = channel_attention(x, hp.attention_ratio, f"attention{i}_")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return layers.Dropout(hp.dropout, name="dropout")(x)


def _module_walk(walk, width, attention_ratio):
    c_in = walk.c
    branches = [  # (reduce width or None, kernel, width), GoogLeNet module 3a
        (None, 1, width), (width * 3 // 2, 3, 2 * width),
        (width // 4, 5, width // 2), ("pool", 1, width // 2),
    ]
    out = 0
    for reduce, kernel, filters in branches:
        walk.c = c_in
        if reduce == "pool":
            walk.store()
        elif reduce is not None:
            walk.conv(max(1, reduce), 1, activation=True)
        walk.conv(max(1, filters), kernel, activation=True)
        out += max(1, filters)
    walk.c = out
    walk.elementwise()  # concatenate
    hidden = max(1, out // attention_ratio)
    walk.params += out * hidden + hidden + hidden * out + out
    walk.elementwise()  # channel-attention rescaling


def _walk(walk, hp):
    walk.conv_bn_relu(hp.stem_filters, hp.stem_kernel, hp.stem_strides)
    for i, width in enumerate(hp.inception_filters, start=1):
        if i > 1:
            walk.pool()
        _module_walk(walk, width, hp.attention_ratio)
    walk.global_pool()
    walk.elementwise()


ARCHITECTURE = register_architecture(Architecture(
    name="inception_attention",
    schema=InceptionAttention,
    trunk=plain_trunk(_layers),
    walk=_walk,
    tiny={"stem_filters": 8, "inception_filters": (8, 16), "attention_ratio": 4},
    description=__doc__.strip(),
))
