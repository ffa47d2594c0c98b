"""What a trained CNN looks at: Grad-CAM heatmaps and feature maps, for every architecture.

Layers are addressed by *path*: ``"conv3"`` for a layer of the model itself,
``"mobilenetv2_base/out_relu"`` for a layer inside a nested model (Keras refuses ``/`` in
layer names, so a path is unambiguous). Functions take a built ``keras.Model`` and arrays of
raw uint8 model inputs ``(N, H, W, C)`` (the models normalize inside) and return NumPy
arrays; nothing is written.

Example:

```python
layer = find_gradcam_layer(model)               # e.g. "block3_relu"
heatmaps = gradcam_heatmaps(model, images)      # (N, H, W) in [0, 1], predicted classes
overlay = overlay_heatmap(images[0], heatmaps[0])  # (H, W, 3) uint8
```
"""

from __future__ import annotations

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from keras import layers

from cnnpipe.evaluate.figures import display_images
from cnnpipe.inference import as_class_probabilities

__all__ = [
    "feature_maps",
    "find_gradcam_layer",
    "gradcam_heatmaps",
    "overlay_heatmap",
]

GRADCAM_BATCH = 64  # bounds the memory of the activations and their gradients

CONV_TYPES = (
    layers.Conv2D,
    layers.Conv2DTranspose,
    layers.SeparableConv2D,
    layers.DepthwiseConv2D,
)

# Layers after a conv whose output is still "the conv's feature map": normalizations,
# activations and merges keep the spatial grid and the channels' meaning. Pooling and
# reshapes are left out: pooling halves the heatmap's resolution, and a Reshape to
# (1, 1, C) (channel attention weights) is 4-D without being a spatial map.
_FEATURE_MAP_TYPES = CONV_TYPES + (
    layers.BatchNormalization,
    layers.Activation,
    layers.ReLU,
    layers.LeakyReLU,
    layers.PReLU,
    layers.ELU,
    layers.Add,
    layers.Subtract,
    layers.Multiply,
    layers.Average,
    layers.Maximum,
    layers.Minimum,
    layers.Concatenate,
)


def _walk(model, prefix: str = ""):
    """``(path, layer)`` for every layer, in graph order, descending into nested models."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            yield from _walk(layer, f"{path}/")
        else:
            yield path, layer


def _resolve(model, path: str):
    layer = model
    for name in path.split("/"):
        if not isinstance(layer, keras.Model):
            raise ValueError(f"Layer path `{path}`: `{layer.name}` is not a nested model")
        try:
            layer = layer.get_layer(name)
        except ValueError:
            raise ValueError(f"Model `{model.name}` has no layer at path `{path}`") from None
    return layer


def find_gradcam_layer(model) -> str:
    """Path of the last layer whose output is a spatial feature map fed by a conv.

    That is the last conv, or what directly follows it (BatchNorm, activation, merge), and
    never a pooling layer: ``conv3`` for simple_cnn, ``block3_relu`` for bn_gap_cnn,
    ``attention2_scale`` for inception_attention (the channel-attention output that merges
    every inception branch; the last Conv2D there is a single branch), and
    ``mobilenetv2_base/out_relu`` for mobilenet_transfer.
    """
    found = None
    seen_conv = False
    for path, layer in _walk(model):
        # Before the first conv, 4-D layers (augmentation, gray_to_rgb) are still the image.
        seen_conv = seen_conv or isinstance(layer, CONV_TYPES)
        if seen_conv and isinstance(layer, _FEATURE_MAP_TYPES) and len(layer.output.shape) == 4:
            found = path
    if found is None:
        raise ValueError(f"Model `{model.name}` has no conv layer for Grad-CAM")
    return found


def _single_output(model):
    if len(model.outputs) != 1:
        raise ValueError(f"Model `{model.name}` must have one output; it has {len(model.outputs)}")
    return model.outputs[0]


def _tap_model(model, paths: list[str], head: str | None = None):
    """Model from ``model``'s input to ``[*outputs of paths, (input of head), predictions]``.

    A layer inside a nested model is not reachable from the outer input in Keras 3 (its
    output lives in the nested model's own graph), so the outer forward pass is rebuilt with
    ``clone_model``: the same layer objects (shared weights) are called again, except that
    each nested model on a path is replaced by a tap model of its own, input -> [inner
    outputs, its output].
    """
    nested: dict[str, list[str]] = {}
    for path in paths:
        outer, _, inner = path.partition("/")
        if inner:
            nested.setdefault(outer, []).append(inner)
    if not nested:
        taps = [_resolve(model, path).output for path in paths]
        if head is not None:
            taps.append(model.get_layer(head).input)
        return keras.Model(model.input, [*taps, _single_output(model)])

    subs = {name: _tap_model(model.get_layer(name), inner) for name, inner in nested.items()}
    captured: dict[str, object] = {}

    def call(layer, *args, **kwargs):
        if layer.name in subs:
            *activations, outputs = subs[layer.name](*args, **kwargs)
            for inner, activation in zip(nested[layer.name], activations, strict=True):
                captured[f"{layer.name}/{inner}"] = activation
        else:
            outputs = layer(*args, **kwargs)
        captured.setdefault(layer.name, outputs)  # the first call, like Layer.output
        if layer.name == head:
            captured.setdefault("\0head", args[0])  # "\0" cannot clash with a layer name
        return outputs

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    taps = [captured[path] for path in paths]
    if head is not None:
        taps.append(captured["\0head"])
    return keras.Model(clone.input, [*taps, _single_output(clone)])


def _logit_head(model):
    """The final Dense layer when it applies sigmoid or softmax itself, else None.

    Grad-CAM differentiates the class score *before* the squashing (Selvaraju et al.): a
    confident prediction saturates the probability, whose gradient then vanishes to zero
    in float32, while the logit's does not.
    """
    head = model.layers[-1]
    if (
        isinstance(head, layers.Dense)
        and head.activation in (keras.activations.sigmoid, keras.activations.softmax)
        and head.output is _single_output(model)
    ):
        return head
    return None


def gradcam_heatmaps(
    model, images, class_indices=None, layer: str | None = None, batch_size: int = GRADCAM_BATCH
) -> np.ndarray:
    """Grad-CAM heatmaps ``(N, H, W)`` in [0, 1], resized to the input images.

    Args:
        model: a built classification model with one output (sigmoid unit or softmax).
        images: ``(N, H, W, C)`` raw uint8 model inputs.
        class_indices: the class each heatmap explains, ``(N,)``; None explains the predicted
            class. For a sigmoid head class 1 follows the logit and class 0 its negative
            (the direction of ``p`` and ``1 - p``).
        layer: path of the feature-map layer; None picks :func:`find_gradcam_layer`'s.
        batch_size: images per forward/backward pass.

    Each heatmap is ReLU(sum_c w_c A_c) with w_c the spatial mean of d score / d A_c, scaled
    so that its maximum is 1. One without positive evidence is all zeros: that happens when
    a model recognizes a class only by the absence of another class's features.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != tuple(model.input.shape[1:]):
        raise ValueError(
            f"images of shape {images.shape} do not fit the model input {model.input.shape}"
        )
    if len(images) == 0:
        return np.zeros((0, *images.shape[1:3]), dtype=np.float32)
    out_dim = _single_output(model).shape[-1]
    num_classes = 2 if out_dim == 1 else out_dim
    class_indices = _checked_class_indices(class_indices, len(images), num_classes)
    layer = layer or find_gradcam_layer(model)
    if len(_resolve(model, layer).output.shape) != 4:
        raise ValueError(f"Grad-CAM needs a layer with (N, H, W, C) output; `{layer}` is not")
    head = _logit_head(model)
    tap = _tap_model(model, [layer], head=None if head is None else head.name)

    heatmaps = []
    for start in range(0, len(images), batch_size):
        chosen = None if class_indices is None else class_indices[start : start + batch_size]
        cam = _class_activation_maps(tap, head, images[start : start + batch_size], chosen)
        heatmaps.append(tf.image.resize(cam[..., None], images.shape[1:3])[..., 0].numpy())
    heatmaps = np.concatenate(heatmaps)
    peak = heatmaps.max(axis=(1, 2), keepdims=True)
    heatmaps = np.divide(heatmaps, peak, out=np.zeros_like(heatmaps), where=peak > 0)
    return np.clip(heatmaps, 0.0, 1.0)


def _checked_class_indices(class_indices, count: int, num_classes: int):
    if class_indices is None:
        return None
    class_indices = np.asarray(class_indices, dtype=np.int64)
    if class_indices.shape != (count,) or not (
        (class_indices >= 0) & (class_indices < num_classes)
    ).all():
        raise ValueError(f"class_indices must be {count} integers in [0, {num_classes})")
    return class_indices


def _class_activation_maps(tap, head, batch, chosen):
    """ReLU(sum_c w_c A_c) per image of ``batch``, at the layer's resolution, for the
    classes ``chosen`` (None: the predicted ones)."""
    batch = tf.convert_to_tensor(batch)
    with tf.GradientTape() as tape:
        if head is None:
            activations, outputs = tap(batch, training=False)
            scores = tf.cast(outputs, tf.float32)
        else:
            activations, features, outputs = tap(batch, training=False)
            scores = tf.matmul(tf.cast(features, tf.float32), head.kernel) + head.bias
        if chosen is None:
            chosen = _predicted_classes(head, outputs, scores)
        if scores.shape[-1] == 1:
            score = scores[:, 0] * np.where(chosen == 1, 1.0, -1.0).astype(np.float32)
        else:
            score = tf.gather(scores, chosen, axis=1, batch_dims=1)
        # Images do not interact at inference, so one sum gives each its own gradient.
        total = tf.reduce_sum(score)
    grads = tf.cast(tape.gradient(total, activations), tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(weights * tf.cast(activations, tf.float32), axis=-1))


def _predicted_classes(head, outputs, scores) -> np.ndarray:
    if head is None:
        return as_class_probabilities(outputs.numpy()).argmax(axis=1)
    if scores.shape[-1] == 1:
        return (scores[:, 0] > 0).numpy().astype(np.int64)
    # Logits, not probabilities: a softmax of near-equal logits rounds to exact ties in
    # float32 and would always pick class 0.
    return tf.argmax(scores, axis=1).numpy()


def overlay_heatmap(image, heatmap, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """``image`` (raw uint8 ``(H, W, C)``, C 1 or 3) blended with a colour-mapped heatmap.

    Also takes a batch, ``(N, H, W, C)`` with ``(N, H, W)`` heatmaps. Returns uint8 RGB.
    """
    image = np.asarray(image)
    heatmap = np.asarray(heatmap, dtype=np.float64)
    single = image.ndim == 3
    batch = image[None] if single else image
    maps = heatmap[None] if single else heatmap
    if maps.shape != batch.shape[:3]:
        raise ValueError(
            f"heatmap of shape {heatmap.shape} does not fit image of shape {image.shape}"
        )
    colours = matplotlib.colormaps[colormap](np.clip(maps, 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * display_images(batch) + alpha * colours
    rgb = np.round(np.clip(blended, 0.0, 1.0) * 255).astype(np.uint8)
    return rgb[0] if single else rgb


def feature_maps(
    model, image, max_layers: int = 2, max_channels: int = 16
) -> dict[str, np.ndarray]:
    """Activations ``(H', W', <= max_channels)`` of the first ``max_layers`` conv layers.

    ``image`` is one raw uint8 ``(H, W, C)`` input; keys are layer paths in graph order
    (for mobilenet_transfer they lie inside ``mobilenetv2_base``).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"feature_maps takes one (H, W, C) image; got shape {image.shape}")
    paths = [path for path, layer in _walk(model) if isinstance(layer, CONV_TYPES)]
    paths = paths[:max_layers]
    if not paths:
        raise ValueError(f"Model `{model.name}` has no conv layer")
    *activations, _ = _tap_model(model, paths)(image[None], training=False)
    return {
        path: np.asarray(activation[0, ..., :max_channels], dtype=np.float32)
        for path, activation in zip(paths, activations, strict=True)
    }
