"""TensorFlow's fused BatchNormalization kernel for training, in place of Keras 3's op chain.

tf.keras 2 trained BatchNormalization on image tensors with TensorFlow's fused kernel
(FusedBatchNormV3, oneDNN's on a CPU). Keras 3 computes the batch moments and the normalization
as separate ops and differentiates through each of them, several passes over every activation.
On the 2-core machine that made BatchNorm the largest cost of the variants that use it: the
fused kernel trains regularized_cnn about 1.5x and bn_gap_cnn and residual_cnn about 1.6x
faster (bench/RESULTS.md, "Fused BatchNorm").

Inside ``fused_batch_norm()``, a BatchNormalization layer in training mode, trainable, on a
float32 NHWC tensor, uses the fused kernel; inference, frozen layers, masks, renorm,
synchronized statistics, other axes and ranks, and other dtypes keep Keras' own code. Only the
method is swapped, for the duration of the block: the layers stay
``keras.layers.BatchNormalization``, so a saved model loads in plain Keras.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def _fused_training_call(original):
    import tensorflow as tf

    def call(self, inputs, training=None, mask=None):
        usable = (
            training is True  # a Python bool in fit; anything else keeps Keras' path
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype == tf.float32
            and self.compute_dtype == "float32"
        )
        if not usable:
            return original(self, inputs, training=training, mask=mask)
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC",
            is_training=True,
        )
        # The kernel hands back the Bessel-corrected variance for the moving average; Keras
        # averages the plain batch variance. Undone so the moving statistics, and so every
        # prediction, mean what Keras' own layer would hold (it matters for 1x1 maps of a
        # small batch: n / (n - 1) is 1.07 at 16 values).
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
        variance = unbiased_variance * (count - 1.0) / count
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum)
        )
        return outputs

    call.__wrapped__ = original
    return call


@contextlib.contextmanager
def fused_batch_norm() -> Iterator[None]:
    """Train every ``keras.layers.BatchNormalization`` it can with the fused kernel while
    the block runs (nested blocks are fine); Keras' own method is back afterwards."""
    import keras

    cls = keras.layers.BatchNormalization
    original = cls.call
    if hasattr(original, "__wrapped__"):  # an enclosing block already swapped it
        yield
        return
    cls.call = _fused_training_call(original)
    try:
        yield
    finally:
        cls.call = original
