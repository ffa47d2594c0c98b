"""Transfer learning: a MobileNetV2 feature extractor and a small new head.

The backbone is a nested model named ``mobilenetv2_base``. With pretrained weights it is
frozen while the head trains; fine-tuning then unfreezes its top layers, with its BatchNorm
statistics kept (``fine_tune_batchnorm: frozen``, the Keras transfer learning guide's recipe)
or updated with them (``train``). A Keras 3 layer that is not trainable runs in inference
mode, so the frozen parts need no ``training=False``. With random weights the whole network
trains from scratch. The input block gives the backbone what
it was designed for, whatever the pipeline's preprocessing: a resize to ``image_size``, 3
channels and pixels scaled to [-1, 1] (what ``mobilenet_v2.preprocess_input`` gives).
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, Strict, model_validator

from cnnpipe.data.bounds import MAX_IMAGE_SIDE
from cnnpipe.models.finetune import BatchNormPolicy
from cnnpipe.models.registry import (
    Architecture,
    FineTuneSplit,
    InputNeeds,
    ModelConfigError,
    register_architecture,
)
from cnnpipe.models.schema import NonNegativeInt, PositiveFloat, PositiveInt, Rate, Variant

BACKBONE_NAME = "mobilenetv2_base"
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # widths Keras publishes weights for
MIN_MOBILENET_SIZE = 32  # five stride-2 stages; Keras refuses smaller inputs
# Per-socket-operation limit while fetching ImageNet weights: a network that drops packets
# instead of refusing them would otherwise hang the build with no timeout at all.
DOWNLOAD_TIMEOUT_S = 20.0
# Keras MobileNetV2's inverted residual blocks: (expansion, filters, repeats, first stride).
MOBILENET_BLOCKS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def _weights_source(value: str) -> str:
    if value in ("none", "imagenet", "pretrain"):
        return value
    if not value.endswith(".h5"):
        raise ValueError("must be none, imagenet, pretrain or the path of a .weights.h5 file")
    if not Path(value).is_file():
        raise ValueError("names a weights file that does not exist")
    return value


class MobilenetTransfer(Variant):
    architecture: Literal["mobilenet_transfer"]
    alpha: PositiveFloat = Field(0.35, description="MobileNetV2 width multiplier")
    image_size: Annotated[int, Strict(), Field(ge=MIN_MOBILENET_SIZE, le=MAX_IMAGE_SIDE)] = Field(
        96, description="side of the square image the backbone sees")
    dense_units: PositiveInt = Field(128, description="the hidden dense layer of the head")
    dropout: Rate = Field(0.2, description="dropout before the head")
    weights: Annotated[str, Strict(), AfterValidator(_weights_source)] = Field(
        "none", description="none | imagenet | PATH.weights.h5 | pretrain (a self-supervised "
        "rotation task on the training images first, offline)")
    pretrain_epochs: PositiveInt = Field(1, description="rotation-task epochs (pretrain only)")
    fine_tune_epochs: NonNegativeInt = Field(0, description="epochs with the base unfrozen")
    fine_tune_layers: NonNegativeInt = Field(0, description="top layers fine-tuning unfreezes")
    fine_tune_lr_factor: PositiveFloat = Field(0.1, description="fine-tuning rate / head rate "
                                               "(the Keras transfer guide's 10x smaller)")
    fine_tune_batchnorm: BatchNormPolicy = Field(
        "frozen", description="frozen keeps the base's BatchNorm statistics while fine-tuning "
        "(pretrained on other images, as ImageNet); train updates those of the unfrozen layers")

    TRAINING_KEYS: ClassVar[frozenset[str]] = Variant.TRAINING_KEYS | {
        "pretrain_epochs", "fine_tune_epochs", "fine_tune_layers", "fine_tune_lr_factor",
        "fine_tune_batchnorm",
    }

    @model_validator(mode="after")
    def _imagenet_needs_a_published_width(self):
        if self.weights == "imagenet" and self.alpha not in IMAGENET_ALPHAS:
            raise ValueError(
                f"alpha {self.alpha:g} has no ImageNet weights; use one of "
                f"{', '.join(f'{a:g}' for a in IMAGENET_ALPHAS)}"
            )
        return self


def _short_reason(exc: BaseException, limit: int = 300) -> str:
    # Keras spreads the useful part over several lines.
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _imagenet_base(shape, alpha):
    import keras

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            # Sizes without their own file get the 224 weights; without the top these are
            # plain conv kernels, valid at any size, so the warning is noise.
            warnings.filterwarnings("ignore", message=".*Weights for input shape")
            return keras.applications.MobileNetV2(
                input_shape=shape, alpha=alpha, include_top=False, weights="imagenet",
                name=BACKBONE_NAME,
            )
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        raise ModelConfigError(
            "Could not download ImageNet weights for MobileNetV2 (no network?): "
            f"{_short_reason(exc)}. Set weights to a local .weights.h5 file or none."
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _load_base_weights(base, weights, alpha):
    try:
        with warnings.catch_warnings():
            # Keras 3.15 warns once per internal container of a Functional model even when
            # every weight loads (the tests compare the weights); real mismatches still raise.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            base.load_weights(weights)
    except Exception as exc:
        raise ModelConfigError(
            f"Could not load MobileNetV2 weights from `{weights}` into a base with "
            f"alpha={alpha:g}: {_short_reason(exc)}"
        ) from None


def _mobilenet_base(image_size: int, alpha: float, weights):
    import keras

    shape = (image_size, image_size, 3)
    if weights == "imagenet":
        return _imagenet_base(shape, alpha)
    base = keras.applications.MobileNetV2(
        input_shape=shape, alpha=alpha, include_top=False, weights=None, name=BACKBONE_NAME
    )
    if weights is not None:
        _load_base_weights(base, weights, alpha)
    return base


def _trunk(hp, backbone_weights=None):
    from keras import layers

    from cnnpipe.models.blocks import BN_MOMENTUM, dense_dropout

    base = _mobilenet_base(hp.image_size, hp.alpha, backbone_weights)
    # Pretrained features are kept (frozen, BatchNorm in inference mode) until fine-tuning; a
    # randomly initialised base must learn, BatchNorm statistics included, or it is a fixed
    # random map. Keras' 0.999 momentum would leave statistics that fine-tuning updates near
    # their old values after a few hundred steps; frozen ones never move, whatever it is.
    base.trainable = backbone_weights is None
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM

    def apply(x, input_shape):
        x = base(x)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        return dense_dropout(x, hp.dense_units, hp.dropout)

    return apply


def _make_divisible(value, divisor=8):
    """Keras MobileNetV2's channel rounding."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _walk(walk, hp):
    alpha = hp.alpha
    walk.conv(_make_divisible(32 * alpha), 3, strides=2, bias=False)
    walk.bn_relu()
    for expansion, filters, repeats, first_stride in MOBILENET_BLOCKS:
        out = _make_divisible(int(filters * alpha))
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            block_in = walk.c
            if expansion > 1:
                walk.conv(block_in * expansion, 1, bias=False)
                walk.bn_relu()
            if stride == 2:
                walk.store()  # ZeroPadding2D before the strided depthwise conv
            walk.depthwise(stride)
            walk.bn_relu()
            walk.conv(out, 1, bias=False)
            walk.bn_relu(relu=False)
            if stride == 1 and block_in == out:
                walk.elementwise()
    walk.conv(_make_divisible(1280 * alpha) if alpha > 1.0 else 1280, 1, bias=False)
    walk.bn_relu()
    walk.global_pool()
    walk.dense_dropout(hp.dense_units)


ARCHITECTURE = register_architecture(Architecture(
    name="mobilenet_transfer",
    schema=MobilenetTransfer,
    trunk=_trunk,
    walk=_walk,
    tiny={"alpha": 0.35, "image_size": 32, "dense_units": 8},
    description=__doc__.strip(),
    input_needs=InputNeeds(side_key="image_size", channels=3, normalization="symmetric"),
    fine_tune=FineTuneSplit(backbone=BACKBONE_NAME),
))
