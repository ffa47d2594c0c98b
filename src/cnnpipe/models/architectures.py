"""The registered CNN builders, plus helpers to fine-tune the pretrained MobileNetV2 backbone.

Every builder has the signature::

    builder(input_shape, num_classes, *, augmentation=None, preprocessing=None, ...)

checks its arguments before building, names every layer (Grad-CAM and feature-map plots find
conv layers by name and type) and returns an uncompiled ``keras.Model`` named after the
architecture. Defaults reproduce the classic Keras CNN tutorial; the pipeline's params shrink
them. ``input_shape`` is the stored image shape: the model takes raw uint8 pixels and its
first layers (:func:`cnnpipe.models.inputs.model_input`) resize, convert channels and
normalize them as ``preprocessing`` (the preprocess stage's settings) says.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import keras
from keras import layers

from cnnpipe.models.layers import (
    check_augmentation,
    check_input_shape,
    check_num_classes,
    check_positive_float,
    check_positive_int,
    check_rate,
    check_widths,
    classification_head,
    require_window,
)
from cnnpipe.models.inputs import check_preprocessing, model_input
from cnnpipe.models.registry import ModelConfigError, register_model

# What the tutorial's food classifier uses; applied by augmented_cnn when none is given.
DEFAULT_AUGMENTATION = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "contrast": 0.1}

BACKBONE_NAME = "mobilenetv2_base"

# Widths Keras publishes ImageNet weights for.
_IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_MIN_MOBILENET_SIZE = 32  # five stride-2 stages; Keras refuses smaller inputs
# BatchNorm's moving statistics start at mean 0 and variance 1 and follow the batches with
# this momentum. Keras' 0.99 (0.999 in its MobileNetV2) is tuned for long runs: after the few
# hundred steps of a small data set (digits: 52 steps an epoch) the initial variance still
# dominates a layer whose real variance is far smaller, and the model scores at chance in
# inference mode while training accuracy climbs (measured: regularized_cnn and bn_gap_cnn at
# 0.10-0.15 validation accuracy on digits; MobileNetV2 at 0.25 on the rotation task). 0.9,
# PyTorch's default (its momentum=0.1), follows the batches within a few dozen steps.
BN_MOMENTUM = 0.9

# Per-socket-operation limit while fetching ImageNet weights: a network that drops packets
# instead of refusing them would otherwise hang the build with no timeout at all.
_DOWNLOAD_TIMEOUT_S = 20.0


def _check_common(input_shape, num_classes, augmentation, preprocessing):
    input_shape = check_input_shape(input_shape)
    return (
        input_shape,
        check_num_classes(num_classes),
        check_augmentation(augmentation),
        check_preprocessing(preprocessing, input_shape),
    )


def _conv_bn_relu(x, filters, kernel_size, prefix, suffix="", strides=1):
    """Same-padded Conv-BN-ReLU named ``{prefix}conv{suffix}``, ``..bn..``, ``..relu..``."""
    # No bias: the following BatchNormalization's beta plays that role.
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        name=f"{prefix}conv{suffix}",
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}bn{suffix}")(x)
    return layers.ReLU(name=f"{prefix}relu{suffix}")(x)


def _max_pool(x, name, input_shape):
    require_window(x, 2, name, input_shape)
    return layers.MaxPooling2D(2, name=name)(x)


def _vgg_block(x, filters, kernel_size, block_id, input_shape):
    """Two Conv-BN-ReLU then a 2x2 max-pool, named ``block{id}_conv1`` ... ``block{id}_pool``."""
    prefix = f"block{block_id}_"
    x = _conv_bn_relu(x, filters, kernel_size, prefix, "1")
    x = _conv_bn_relu(x, filters, kernel_size, prefix, "2")
    return _max_pool(x, f"{prefix}pool", input_shape)


def _single_conv_block(x, filters, kernel_size, block_id, input_shape):
    """Conv-BN-ReLU then a 2x2 max-pool, named ``block{id}_conv`` ... ``block{id}_pool``."""
    prefix = f"block{block_id}_"
    x = _conv_bn_relu(x, filters, kernel_size, prefix)
    return _max_pool(x, f"{prefix}pool", input_shape)


@register_model("simple_cnn")
def simple_cnn(
    input_shape,
    num_classes,
    *,
    augmentation=None,
    preprocessing=None,
    filters=(32, 64, 64),
    kernel_size=3,
    dense_units=64,
):
    """The tutorial's first CNN: valid 3x3 convs with a 2x2 max-pool between them.

    Args:
        filters: widths of the conv layers ``conv1``, ``conv2``, ...; a ``pool{i}`` follows
            every conv but the last.
        kernel_size: square kernel of every conv.
        dense_units: width of the hidden ``dense`` layer before ``predictions``.
    """
    input_shape, num_classes, augmentation, preprocessing = _check_common(
        input_shape, num_classes, augmentation, preprocessing
    )
    filters = check_widths("filters", filters)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    dense_units = check_positive_int("dense_units", dense_units)

    inputs, x = model_input(input_shape, preprocessing, augmentation)
    for i, width in enumerate(filters, start=1):
        require_window(x, kernel_size, f"conv{i}", input_shape)
        x = layers.Conv2D(width, kernel_size, activation="relu", name=f"conv{i}")(x)
        if i < len(filters):
            x = _max_pool(x, f"pool{i}", input_shape)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name="simple_cnn")


@register_model("regularized_cnn")
def regularized_cnn(
    input_shape,
    num_classes,
    *,
    augmentation=None,
    preprocessing=None,
    filters=(32, 64, 128),
    kernel_size=3,
    conv_dropout=0.25,
    dense_units=128,
    dense_dropout=0.5,
):
    """The tutorial's "correct way": VGG-style blocks with BatchNorm and Dropout.

    Each width in ``filters`` is a block ``block{i}_``: conv1-bn1-relu1-conv2-bn2-relu2 (same
    padding), a 2x2 ``pool`` and ``dropout`` (``conv_dropout``). Then ``flatten``, ``dense``
    (relu), ``dense_bn``, ``dense_dropout`` and the head.
    """
    input_shape, num_classes, augmentation, preprocessing = _check_common(
        input_shape, num_classes, augmentation, preprocessing
    )
    filters = check_widths("filters", filters)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    conv_dropout = check_rate("conv_dropout", conv_dropout)
    dense_units = check_positive_int("dense_units", dense_units)
    dense_dropout = check_rate("dense_dropout", dense_dropout)

    inputs, x = model_input(input_shape, preprocessing, augmentation)
    for i, width in enumerate(filters, start=1):
        x = _vgg_block(x, width, kernel_size, i, input_shape)
        x = layers.Dropout(conv_dropout, name=f"block{i}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="dense_bn")(x)
    x = layers.Dropout(dense_dropout, name="dense_dropout")(x)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name="regularized_cnn")


@register_model("overfit_cnn")
def overfit_cnn(
    input_shape,
    num_classes,
    *,
    augmentation=None,
    preprocessing=None,
    filters=(512, 512),
    kernel_size=3,
    dense_units=1000,
):
    """The tutorial's "wrong way" baseline: wide valid convs, one pool, a huge dense layer.

    No BatchNorm and no Dropout on purpose: it exists to show overfitting. Layers: ``conv{i}``
    for each width in ``filters``, ``pool``, ``flatten``, ``dense`` and the head.
    """
    input_shape, num_classes, augmentation, preprocessing = _check_common(
        input_shape, num_classes, augmentation, preprocessing
    )
    filters = check_widths("filters", filters)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    dense_units = check_positive_int("dense_units", dense_units)

    inputs, x = model_input(input_shape, preprocessing, augmentation)
    for i, width in enumerate(filters, start=1):
        require_window(x, kernel_size, f"conv{i}", input_shape)
        x = layers.Conv2D(width, kernel_size, activation="relu", name=f"conv{i}")(x)
    x = _max_pool(x, "pool", input_shape)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name="overfit_cnn")


@register_model("bn_gap_cnn")
def bn_gap_cnn(
    input_shape,
    num_classes,
    *,
    augmentation=None,
    preprocessing=None,
    filters=(32, 64, 128),
    kernel_size=3,
    dense_units=128,
    dropout=0.5,
):
    """The tutorial's pet classifier: Conv-BN-ReLU-pool blocks and global average pooling.

    Each width in ``filters`` is a block ``block{i}_conv/bn/relu/pool``; then ``gap``,
    ``dense`` (relu), ``dropout`` and the head.
    """
    input_shape, num_classes, augmentation, preprocessing = _check_common(
        input_shape, num_classes, augmentation, preprocessing
    )
    filters = check_widths("filters", filters)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    dense_units = check_positive_int("dense_units", dense_units)
    dropout = check_rate("dropout", dropout)

    inputs, x = model_input(input_shape, preprocessing, augmentation)
    x = _gap_classifier_trunk(x, filters, kernel_size, input_shape)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name="bn_gap_cnn")


def _gap_classifier_trunk(x, filters, kernel_size, input_shape):
    for i, width in enumerate(filters, start=1):
        x = _single_conv_block(x, width, kernel_size, i, input_shape)
    return layers.GlobalAveragePooling2D(name="gap")(x)


def _residual_block(x, filters, kernel_size, prefix="res_"):
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


@register_model("residual_cnn")
def residual_cnn(
    input_shape,
    num_classes,
    *,
    augmentation=None,
    preprocessing=None,
    stem_filters=64,
    stem_kernel=3,
    stem_strides=1,
    residual_filters=64,
    block_filters=(128, 256),
    kernel_size=3,
    dense_units=256,
    dropout=0.5,
):
    """The tutorial's medical image analyzer: a stem, one residual block, then VGG blocks.

    Layers: ``stem_conv/bn/relu`` (``stem_kernel``, 3 suits small images where ResNet uses
    7; ``stem_strides`` 2 halves the resolution as ResNet's stem does);
    ``res_conv1/bn1/relu1/conv2/bn2``, a 1x1 ``res_shortcut`` (+``res_shortcut_bn``) only
    when ``residual_filters`` differs from ``stem_filters``, ``res_add``, ``res_relu``; one
    ``block{i}_`` (two Conv-BN-ReLU and a 2x2 pool) per width in ``block_filters``; ``gap``,
    ``dense`` (relu), ``dropout`` and the head.
    """
    input_shape, num_classes, augmentation, preprocessing = _check_common(
        input_shape, num_classes, augmentation, preprocessing
    )
    stem_filters = check_positive_int("stem_filters", stem_filters)
    stem_kernel = check_positive_int("stem_kernel", stem_kernel)
    stem_strides = check_positive_int("stem_strides", stem_strides)
    residual_filters = check_positive_int("residual_filters", residual_filters)
    block_filters = check_widths("block_filters", block_filters)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    dense_units = check_positive_int("dense_units", dense_units)
    dropout = check_rate("dropout", dropout)

    inputs, x = model_input(input_shape, preprocessing, augmentation)
    x = _conv_bn_relu(x, stem_filters, stem_kernel, "stem_", strides=stem_strides)
    x = _residual_block(x, residual_filters, kernel_size)
    for i, width in enumerate(block_filters, start=1):
        x = _vgg_block(x, width, kernel_size, i, input_shape)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name="residual_cnn")


def _inception_module(x, width, prefix):
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


def _channel_attention(x, ratio, prefix):
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


@register_model("inception_attention")
def inception_attention(
    input_shape,
    num_classes,
    *,
    augmentation=None,
    preprocessing=None,
    stem_filters=32,
    stem_kernel=3,
    stem_strides=1,
    inception_filters=(32, 64),
    attention_ratio=8,
    dropout=0.4,
):
    """Inception modules, each followed by channel attention.

    Args:
        stem_filters, stem_kernel, stem_strides: the ``stem_conv/bn/relu`` layer (same
            padding; ``stem_strides`` 2 halves the resolution the modules work at).
        inception_filters: one inception module per entry, the entry being the module's
            base width w; branches are 1x1 (w), 1x1 (3w/2) -> 3x3 (2w), 1x1 (w/4) -> 5x5
            (w/2) and 3x3 max-pool -> 1x1 (w/2) (GoogLeNet module 3a's ratios), concatenated
            to about 4w channels. Layers ``inception{i}_1x1`` ... ``inception{i}_concat``.
        attention_ratio: channel reduction of the shared attention MLP (``attention{i}_``);
            the module output to use for Grad-CAM is ``attention{i}_scale``.
        dropout: before the head (0.4, GoogLeNet's rate).

    A 2x2 ``pool{i}`` sits between modules; ``gap`` and ``dropout`` precede the head.
    """
    input_shape, num_classes, augmentation, preprocessing = _check_common(
        input_shape, num_classes, augmentation, preprocessing
    )
    stem_filters = check_positive_int("stem_filters", stem_filters)
    stem_kernel = check_positive_int("stem_kernel", stem_kernel)
    stem_strides = check_positive_int("stem_strides", stem_strides)
    inception_filters = check_widths("inception_filters", inception_filters)
    attention_ratio = check_positive_int("attention_ratio", attention_ratio)
    dropout = check_rate("dropout", dropout)

    inputs, x = model_input(input_shape, preprocessing, augmentation)
    x = _conv_bn_relu(x, stem_filters, stem_kernel, "stem_", strides=stem_strides)
    for i, width in enumerate(inception_filters, start=1):
        if i > 1:
            x = _max_pool(x, f"pool{i - 1}", input_shape)
        x = _inception_module(x, width, f"inception{i}_")
        x = _channel_attention(x, attention_ratio, f"attention{i}_")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name="inception_attention")


@register_model("augmented_cnn")
def augmented_cnn(
    input_shape,
    num_classes,
    *,
    augmentation=None,
    preprocessing=None,
    filters=(32, 64, 128),
    kernel_size=3,
    dense_units=256,
    dropout=0.5,
):
    """The tutorial's food classifier: in-model augmentation, Conv-BN-ReLU-pool blocks, GAP.

    ``augmentation=None`` means the tutorial's default (horizontal flip, rotation, zoom and
    contrast 0.1); pass ``{}`` to build it without augmentation. Layers as in ``bn_gap_cnn``.
    """
    if augmentation is None:
        augmentation = DEFAULT_AUGMENTATION
    input_shape, num_classes, augmentation, preprocessing = _check_common(
        input_shape, num_classes, augmentation, preprocessing
    )
    filters = check_widths("filters", filters)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    dense_units = check_positive_int("dense_units", dense_units)
    dropout = check_rate("dropout", dropout)

    inputs, x = model_input(input_shape, preprocessing, augmentation)
    x = _gap_classifier_trunk(x, filters, kernel_size, input_shape)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name="augmented_cnn")


def _short_reason(exc: BaseException, limit: int = 300) -> str:
    # Keras spreads the useful part over several lines; ModelConfigError messages are one line.
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_weights(weights: Any, alpha: float):
    """``None`` (random), ``"imagenet"`` or a ``Path`` to an existing weights file."""
    if weights is None or weights == "none":
        return None
    if weights == "imagenet":
        if alpha not in _IMAGENET_ALPHAS:
            raise ModelConfigError(
                "ImageNet weights exist only for `alpha` in "
                f"{', '.join(f'{a:g}' for a in _IMAGENET_ALPHAS)}. Received `alpha={alpha:g}`"
            )
        return "imagenet"
    # Keras writes .weights.h5; the files Keras downloads for ImageNet are legacy .h5, which
    # load_weights still reads, so a copy fetched on another machine works too.
    if not isinstance(weights, (str, os.PathLike)) or not str(weights).endswith(".h5"):
        raise ModelConfigError(
            "`weights` must be none, imagenet or the path of a .weights.h5 file. "
            f"Received `weights={weights!r}`"
        )
    path = Path(weights)
    if not path.is_file():
        raise ModelConfigError(
            f"MobileNetV2 weights file `{path}` does not exist. Set weights to an existing "
            ".weights.h5 file, imagenet or none."
        )
    return path


def _mobilenet_base(image_size: int, alpha: float, weights):
    shape = (image_size, image_size, 3)
    if weights == "imagenet":
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        try:
            with warnings.catch_warnings():
                # Sizes without their own file get the 224 weights; without the top these
                # are plain conv kernels, valid at any size, so the warning is noise.
                warnings.filterwarnings("ignore", message=".*Weights for input shape")
                return keras.applications.MobileNetV2(
                    input_shape=shape,
                    alpha=alpha,
                    include_top=False,
                    weights="imagenet",
                    name=BACKBONE_NAME,
                )
        except Exception as exc:  # Keras raises a bare Exception for a failed download
            raise ModelConfigError(
                "Could not download ImageNet weights for MobileNetV2 (no network?): "
                f"{_short_reason(exc)}. Set weights to a local .weights.h5 file or none."
            ) from None
        finally:
            socket.setdefaulttimeout(previous_timeout)
    base = keras.applications.MobileNetV2(
        input_shape=shape, alpha=alpha, include_top=False, weights=None, name=BACKBONE_NAME
    )
    if weights is not None:
        try:
            with warnings.catch_warnings():
                # Keras 3.15 warns once per internal container of a Functional model even
                # when every weight loads (the tests compare the weights); real mismatches
                # still raise below.
                warnings.filterwarnings("ignore", message="Skipping nested container")
                base.load_weights(weights)
        except Exception as exc:
            raise ModelConfigError(
                f"Could not load MobileNetV2 weights from `{weights}` into a base with "
                f"alpha={alpha:g}: {_short_reason(exc)}"
            ) from None
    return base


@register_model("mobilenet_transfer")
def mobilenet_transfer(
    input_shape,
    num_classes,
    *,
    augmentation=None,
    preprocessing=None,
    alpha=0.35,
    image_size=96,
    dense_units=128,
    dropout=0.2,
    weights="none",
):
    """Transfer learning: a frozen MobileNetV2 feature extractor and a small new head.

    The backbone is a nested model named ``mobilenetv2_base`` (see :func:`find_backbone`).
    With pretrained weights it is frozen and called with ``training=False`` so its BatchNorm
    layers keep their statistics even after :func:`set_base_trainable` unfreezes it for
    fine-tuning (the Keras transfer learning guide's recipe); with ``weights="none"`` the
    whole network trains from scratch. The input layers give the backbone what it was
    designed for, whatever the pipeline's preprocessing: ``resize`` to ``image_size``,
    ``gray_to_rgb`` for 1-channel input and pixels scaled to [-1, 1] (what
    ``mobilenet_v2.preprocess_input`` gives).

    Args:
        alpha: MobileNetV2 width multiplier.
        image_size: side of the square image the backbone sees, >= 32.
        dense_units, dropout: the ``dense`` (relu) and ``dropout`` layers before the head.
        weights: ``"none"`` (random), ``"imagenet"`` (downloaded by Keras, needs network) or
            the path of a weights file saved from a backbone with the same alpha and size.
    """
    input_shape, num_classes, augmentation, preprocessing = _check_common(
        input_shape, num_classes, augmentation, preprocessing
    )
    alpha = check_positive_float("alpha", alpha)
    image_size = check_positive_int("image_size", image_size, minimum=_MIN_MOBILENET_SIZE)
    dense_units = check_positive_int("dense_units", dense_units)
    dropout = check_rate("dropout", dropout)
    weights = _check_weights(weights, alpha)

    # Built first: a failing download or a mismatched weights file should fail fast.
    base = _mobilenet_base(image_size, alpha, weights)
    pretrained = weights is not None
    # Pretrained features are kept (frozen, BatchNorm in inference mode); a randomly
    # initialised base must learn, BatchNorm statistics included, or it is a fixed random map.
    base.trainable = not pretrained
    if not pretrained:
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = BN_MOMENTUM

    inputs, x = model_input(
        input_shape, preprocessing, augmentation,
        image_size=(image_size, image_size), channels=3, normalization="symmetric",
    )
    x = base(x, training=False) if pretrained else base(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = classification_head(x, num_classes)
    return keras.Model(inputs, outputs, name="mobilenet_transfer")


def find_backbone(model) -> keras.Model | None:
    """The nested ``mobilenetv2_base`` model of ``model`` (searched recursively), or None."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if layer.name == BACKBONE_NAME:
                return layer
            found = find_backbone(layer)
            if found is not None:
                return found
    return None


def set_base_trainable(model, trainable_top_layers: int) -> None:
    """Unfreeze the top ``trainable_top_layers`` weighted layers of the backbone for fine-tuning.

    BatchNormalization layers stay frozen: with few images their batch statistics would wreck
    the pretrained ones (the base is also called with ``training=False``). Counting covers only
    layers that have weights and are not BatchNormalization; a count above their number
    unfreezes all of them; 0 freezes the whole base again (a no-op for a model without a
    backbone). Recompile the model afterwards for the change to take effect.
    """
    count = check_positive_int("trainable_top_layers", trainable_top_layers, minimum=0)
    base = find_backbone(model)
    if base is None:
        if count == 0:
            return
        raise ModelConfigError(
            f"Model `{model.name}` has no pretrained `{BACKBONE_NAME}` to fine-tune; only "
            f"mobilenet_transfer has one. Received `trainable_top_layers={count}`"
        )
    if count == 0:
        base.trainable = False
        return
    # Setting the base trainable first flips every nested layer; then re-freeze the rest.
    base.trainable = True
    candidates = [
        layer
        for layer in base.layers
        if layer.weights and not isinstance(layer, layers.BatchNormalization)
    ]
    unfrozen = {id(layer) for layer in candidates[-count:]}
    for layer in base.layers:
        layer.trainable = id(layer) in unfrozen
