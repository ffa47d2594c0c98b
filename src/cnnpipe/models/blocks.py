"""Named building blocks the trunks share (TensorFlow is imported here, not by the zoo).

Layer names and creation order are part of a trained model: the weights file is keyed by
the names and initial weights are drawn in creation order, so a change here retrains.
"""

from __future__ import annotations

from keras import layers

from cnnpipe.models.registry import ModelConfigError

# BatchNorm's moving statistics start at mean 0 and variance 1 and follow the batches with
# this momentum. Keras' 0.99 (0.999 in its MobileNetV2) is tuned for long runs: after the few
# hundred steps of a small data set (digits: 52 steps an epoch) the initial variance still
# dominates a layer whose real variance is far smaller, and the model scores at chance in
# inference mode while training accuracy climbs (measured: regularized_cnn and bn_gap_cnn at
# 0.10-0.15 validation accuracy on digits; MobileNetV2 at 0.25 on the rotation task). 0.9,
# PyTorch's default (its momentum=0.1), follows the batches within a few dozen steps.
BN_MOMENTUM = 0.9


def require_window(x, window: int, layer_name: str, input_shape: tuple[int, int, int]) -> None:
    """Refuse an input that has shrunk below a valid conv or pool window before ``layer_name``.

    Keras would fail too, but deep inside the layer and with shapes instead of a remedy.
    """
    height, width = x.shape[1], x.shape[2]
    if height < window or width < window:
        raise ModelConfigError(
            f"`input_shape` is too small for this architecture: the feature map before "
            f"`{layer_name}` is {height}x{width}, smaller than its {window}x{window} window; "
            f"use larger images or fewer blocks. Received `input_shape={input_shape}`"
        )


def conv_bn_relu(x, filters, kernel_size, prefix, suffix="", strides=1):
    """Same-padded Conv-BN-ReLU named ``{prefix}conv{suffix}``, ``..bn..``, ``..relu..``."""
    # No bias: the following BatchNormalization's beta plays that role.
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        name=f"{prefix}conv{suffix}",
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}bn{suffix}")(x)
    return layers.ReLU(name=f"{prefix}relu{suffix}")(x)


def max_pool(x, name, input_shape):
    require_window(x, 2, name, input_shape)
    return layers.MaxPooling2D(2, name=name)(x)


def valid_conv(x, width, kernel_size, name, input_shape):
    """A valid-padded ReLU conv, refused in one line where the window does not fit."""
    require_window(x, kernel_size, name, input_shape)
    return layers.Conv2D(width, kernel_size, activation="relu", name=name)(x)


def vgg_block(x, filters, kernel_size, block_id, input_shape):
    """Two Conv-BN-ReLU then a 2x2 max-pool, named ``block{id}_conv1`` ... ``block{id}_pool``."""
    prefix = f"block{block_id}_"
    x = conv_bn_relu(x, filters, kernel_size, prefix, "1")
    x = conv_bn_relu(x, filters, kernel_size, prefix, "2")
    return max_pool(x, f"{prefix}pool", input_shape)


def single_conv_block(x, filters, kernel_size, block_id, input_shape):
    """Conv-BN-ReLU then a 2x2 max-pool, named ``block{id}_conv`` ... ``block{id}_pool``."""
    prefix = f"block{block_id}_"
    x = conv_bn_relu(x, filters, kernel_size, prefix)
    return max_pool(x, f"{prefix}pool", input_shape)


def dense_dropout(x, units, rate, dropout_name="dropout"):
    """The hidden ``dense`` (relu) layer and its dropout, before the head."""
    x = layers.Dense(units, activation="relu", name="dense")(x)
    return layers.Dropout(rate, name=dropout_name)(x)


def residual_block(x, filters, kernel_size, prefix="res_"):
    """Conv-BN-ReLU-Conv-BN plus the input, then ReLU (a ResNet basic block, stride 1)."""
    shortcut = x
    x = layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False, name=f"{prefix}conv1"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}bn1")(x)
    x = layers.ReLU(name=f"{prefix}relu1")(x)
    x = layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False, name=f"{prefix}conv2"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}bn2")(x)
    if shortcut.shape[-1] != filters:
        # Add needs equal widths; a 1x1 projection is ResNet's option (B) for that.
        shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}shortcut")(shortcut)
        shortcut = layers.BatchNormalization(
            momentum=BN_MOMENTUM, name=f"{prefix}shortcut_bn"
        )(shortcut)
    x = layers.Add(name=f"{prefix}add")([x, shortcut])
    return layers.ReLU(name=f"{prefix}relu")(x)


def inception_module(x, width, prefix):
    """GoogLeNet (v1) module with branch widths in the ratios of its module 3a.

    For base ``width`` w: 1x1 (w); 1x1 (3w/2) -> 3x3 (2w); 1x1 (w/4) -> 5x5 (w/2);
    3x3 max-pool (stride 1) -> 1x1 (w/2). Concatenated: about 4w channels.
    """

    def conv(y, filters, kernel, name):
        return layers.Conv2D(
            max(1, filters), kernel, padding="same", activation="relu", name=f"{prefix}{name}"
        )(y)

    branch1 = conv(x, width, 1, "1x1")
    branch3 = conv(conv(x, width * 3 // 2, 1, "3x3_reduce"), 2 * width, 3, "3x3")
    branch5 = conv(conv(x, width // 4, 1, "5x5_reduce"), width // 2, 5, "5x5")
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{prefix}pool")(x)
    branch_pool = conv(pooled, width // 2, 1, "pool_proj")
    return layers.Concatenate(name=f"{prefix}concat")([branch1, branch3, branch5, branch_pool])


def channel_attention(x, ratio, prefix):
    """CBAM channel attention: rescale each channel by a weight learned from its statistics.

    Average- and max-pooled descriptors go through ONE shared two-layer MLP (so both describe
    the channels in the same learned space), are summed and squashed to (0, 1).
    """
    channels = x.shape[-1]
    hidden = layers.Dense(max(1, channels // ratio), activation="relu", name=f"{prefix}mlp_hidden")
    out = layers.Dense(channels, name=f"{prefix}mlp_out")
    avg = out(hidden(layers.GlobalAveragePooling2D(name=f"{prefix}avg_pool")(x)))
    mx = out(hidden(layers.GlobalMaxPooling2D(name=f"{prefix}max_pool")(x)))
    weights = layers.Add(name=f"{prefix}add")([avg, mx])
    weights = layers.Activation("sigmoid", name=f"{prefix}sigmoid")(weights)
    weights = layers.Reshape((1, 1, channels), name=f"{prefix}reshape")(weights)
    return layers.Multiply(name=f"{prefix}scale")([x, weights])
