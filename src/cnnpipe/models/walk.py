"""A network's shapes walked on paper: what the memory estimate and params validation use.

No TensorFlow: each architecture's registration walks the layers its trunk builds, so a
params.yaml whose images are too small for a variant, or whose batch cannot fit in memory,
is refused before any stage starts.
"""

from __future__ import annotations

import math

from cnnpipe.models.registry import ModelConfigError


class ShapeWalk:
    """Shapes through a network, per image: elements of every stored output, parameters."""

    def __init__(self, height: int, width: int, channels: int):
        self.h, self.w, self.c = height, width, channels
        self.elements = 0
        self.largest = 0
        self.params = 0

    def store(self, tensors: float = 1) -> None:
        size = self.h * self.w * self.c
        self.elements += size * tensors
        self.largest = max(self.largest, size)

    def require(self, window: int, what: str) -> None:
        """The builders refuse a window larger than the feature map; so does the walk."""
        if self.h < window or self.w < window:
            raise ModelConfigError(
                f"the images are too small for this architecture: the feature map before "
                f"a {what} is {self.h}x{self.w}, smaller than its {window}x{window} window; "
                "use larger images (preprocess.image_size) or fewer blocks"
            )

    def conv(self, filters, kernel, strides=1, padding="same", bias=True, activation=False):
        self.params += kernel * kernel * self.c * filters + (filters if bias else 0)
        if padding == "valid":
            self.require(kernel, f"{kernel}x{kernel} valid conv")
            self.h, self.w = self.h - kernel + 1, self.w - kernel + 1
        self.h, self.w = math.ceil(self.h / strides), math.ceil(self.w / strides)
        self.c = filters
        self.store(2 if activation else 1)  # the conv output, then the activation's

    def conv_bn_relu(self, filters, kernel, strides=1):
        self.conv(filters, kernel, strides=strides, bias=False)
        self.bn_relu()

    def depthwise(self, strides):
        self.params += 9 * self.c
        self.h, self.w = math.ceil(self.h / strides), math.ceil(self.w / strides)
        self.store()

    def bn_relu(self, relu=True):
        self.params += 4 * self.c  # gamma, beta, moving mean and variance
        self.store(2 if relu else 1)

    def pool(self, size=2):
        self.require(size, f"{size}x{size} pool")
        self.h, self.w = self.h // size, self.w // size
        self.store()

    def elementwise(self, tensors=1):
        self.store(tensors)  # dropout, add, multiply, concatenate: one more tensor each

    def flatten(self):
        self.h, self.w, self.c = 1, 1, self.h * self.w * self.c

    def global_pool(self):
        self.h, self.w = 1, 1
        self.store()

    def dense(self, units, activation=True):
        self.params += self.c * units + units
        self.c = units
        self.store(2 if activation else 1)

    def dense_dropout(self, units):
        """blocks.dense_dropout on paper: the hidden dense layer, then its dropout."""
        self.dense(units)
        self.elementwise()

    def head(self, num_classes):
        self.dense(1 if num_classes == 2 else num_classes)
