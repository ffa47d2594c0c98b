"""The SavedModel that TF Serving serves: encoded images in, class probabilities and names out.

Two signatures, built with ``keras.export.ExportArchive`` (the first endpoint becomes
``serving_default``):

- ``serving_default`` takes ``images``, a batch of encoded image bytes (``tf.string [-1]``:
  JPEG, PNG, GIF, BMP, whatever ``tf.io.decode_image`` reads) and turns each into the model's
  uint8 input inside the graph, the way ``cnnpipe predict`` does with Pillow: transparency
  flattened onto white, grayscale from colour with Pillow's luma, colour from grayscale by
  replication, then the stored size by a centre crop (when the model card says so) and a
  bilinear resize that widens when it shrinks, as Pillow's does. An image already at the
  stored size passes through untouched, so it gets exactly the probabilities of
  ``cnnpipe predict``; at other sizes the two resizers differ by at most one grey level.
- ``serving_uint8`` takes ``pixels``, uint8 ``[-1, H, W, C]`` at the stored size.

Both return ``probabilities`` (float32 ``[batch, classes]``; a two-class sigmoid head gives
the columns ``[1 - p, p]``), ``classes`` (the class names, ``[batch, classes]``, one row per
image because TF Serving's row format splits every output on its first dimension) and
``predicted_class`` (``[batch]``).

The graph cannot apply EXIF orientation (TensorFlow's decoders ignore it): a photo taken on
its side is classified on its side. Clients rotate images upright before sending them.
16-bit PNGs are reduced to 8 bits by TensorFlow's truncation rather than Pillow's rounding.
"""

from __future__ import annotations

from pathlib import Path

from cnnpipe.inference import InputSpec, TrainedVariant

IMAGES_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serving_uint8"
IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"
OUTPUTS = ("probabilities", "classes", "predicted_class")
EXIF_NOTE = ("EXIF orientation is not applied inside the graph: rotate images upright "
             "before sending")
# Pillow's convert("L") in fixed point: L = (19595 R + 38470 G + 7471 B + 2^15) >> 16.
LUMA_WEIGHTS = (19595, 38470, 7471)
LUMA_ROUNDING = 1 << 15
LUMA_SHIFT = 16


def savedmodel_dir(export_root: str | Path, variant: str, version: int) -> Path:
    """``<export>/savedmodel/<variant>/<version>``: mount ``<export>/savedmodel/<variant>``
    as TF Serving's ``--model_base_path`` and it serves the newest version it finds."""
    return Path(export_root) / "savedmodel" / variant / str(version)


def write_savedmodel(trained: TrainedVariant, folder: str | Path) -> Path:
    """Write the two-signature SavedModel of ``trained`` to ``folder`` (created); returns it."""
    import keras

    spec = trained.input_spec
    archive = keras.export.ExportArchive()
    archive.track(trained.model)
    serve_pixels = _serving_outputs(trained)
    decode = _image_decoder(spec, _image_fitter(spec))

    def serve_images(images):
        return serve_pixels(decode(images))

    # The first endpoint added becomes the SavedModel's default signature.
    archive.add_endpoint(IMAGES_SIGNATURE, serve_images, input_signature=[_images_spec()])
    archive.add_endpoint(PIXELS_SIGNATURE, serve_pixels, input_signature=[_pixels_spec(spec)])
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    archive.write_out(str(folder), verbose=False)
    return folder


def signature_description(spec: InputSpec, num_classes: int) -> dict:
    """Each signature's inputs and outputs (dtype, shape with -1 for the batch), for the card."""
    outputs = {
        "probabilities": {"dtype": "float32", "shape": [-1, num_classes]},
        "classes": {"dtype": "string", "shape": [-1, num_classes]},
        "predicted_class": {"dtype": "string", "shape": [-1]},
    }
    return {
        IMAGES_SIGNATURE: {
            "inputs": {IMAGES_INPUT: {"dtype": "string", "shape": [-1],
                                      "content": "encoded image bytes (JPEG, PNG, GIF, BMP)"}},
            "outputs": outputs,
        },
        PIXELS_SIGNATURE: {
            "inputs": {PIXELS_INPUT: {"dtype": "uint8", "shape": [-1, *spec.shape]}},
            "outputs": outputs,
        },
    }


def _images_spec():
    import tensorflow as tf

    return tf.TensorSpec([None], tf.string, name=IMAGES_INPUT)


def _pixels_spec(spec: InputSpec):
    import tensorflow as tf

    return tf.TensorSpec([None, *spec.shape], tf.uint8, name=PIXELS_INPUT)


def _serving_outputs(trained: TrainedVariant):
    """uint8 pixels -> the output dictionary both signatures return."""
    import tensorflow as tf

    model = trained.model
    names = tf.constant(trained.class_names)
    sigmoid_head = trained.num_classes == 2 and model.output_shape[-1] == 1

    def serve(pixels):
        scores = tf.cast(model(pixels, training=False), tf.float32)
        if sigmoid_head:
            scores = tf.concat([1.0 - scores, scores], axis=1)
        rows = tf.shape(scores)[0]
        return {
            "probabilities": scores,
            "classes": tf.tile(names[None, :], [rows, 1]),
            "predicted_class": tf.gather(names, tf.argmax(scores, axis=1)),
        }

    return serve


def _image_decoder(spec: InputSpec, fit):
    """tf.string [-1] of encoded images -> uint8 [-1, H, W, C], one image at a time."""
    import tensorflow as tf

    channels = spec.shape[2]

    def decode_one(encoded):
        # The first frame of an animation, as Pillow reads it.
        image = tf.io.decode_image(encoded, channels=0, expand_animations=False, dtype=tf.uint8)
        return fit(_with_channels(_flatten_alpha(image), channels))

    def decode(images):
        return tf.map_fn(decode_one, images,
                         fn_output_signature=tf.TensorSpec(spec.shape, tf.uint8))

    return decode


def _flatten_alpha(image):
    """Gray+alpha or RGBA composited onto white, rounded as cnnpipe.data.decode does it."""
    import tensorflow as tf

    def on_white():
        colour = tf.cast(image[..., :-1], tf.float32)
        alpha = tf.cast(image[..., -1:], tf.float32) / 255.0
        blended = colour * alpha + 255.0 * (1.0 - alpha)
        return tf.cast(tf.clip_by_value(tf.round(blended), 0.0, 255.0), tf.uint8)

    has_alpha = tf.equal(tf.shape(image)[-1] % 2, 0)  # 2 (LA) or 4 (RGBA) channels
    return tf.cond(has_alpha, on_white, lambda: image)


def _with_channels(image, channels: int):
    """1 or 3 channels in, the model's ``channels`` out (luma or replication)."""
    import tensorflow as tf

    have = tf.shape(image)[-1]
    if channels == 3:
        converted = tf.cond(tf.equal(have, 1), lambda: tf.tile(image, [1, 1, 3]), lambda: image)
    else:
        converted = tf.cond(tf.equal(have, 3), lambda: _luma(image), lambda: image)
    return tf.ensure_shape(converted, [None, None, channels])


def _luma(image):
    """ITU-R 601 luma in Pillow's integer arithmetic, so gray values match it exactly."""
    import tensorflow as tf

    weights = tf.constant(LUMA_WEIGHTS, tf.int32)
    weighted = tf.reduce_sum(tf.cast(image, tf.int32) * weights, axis=-1, keepdims=True)
    return tf.cast(tf.bitwise.right_shift(weighted + LUMA_ROUNDING, LUMA_SHIFT), tf.uint8)


def _image_fitter(spec: InputSpec):
    """uint8 [h, w, C] -> uint8 [H, W, C]: untouched at the stored size, else (centre crop,)
    bilinear resize with antialiasing (Pillow's filter also widens when it shrinks)."""
    import tensorflow as tf

    height, width, channels = spec.shape

    def resized(image):
        if spec.crop_to_aspect_ratio:
            image = _centre_crop(image, height / width)
        smooth = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(smooth), 0.0, 255.0), tf.uint8)

    def fit(image):
        size = tf.shape(image)[:2]
        stored = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
        fitted = tf.cond(stored, lambda: image, lambda: resized(image))
        return tf.ensure_shape(fitted, [height, width, channels])

    return fit


def _centre_crop(image, aspect: float):
    """The largest centred window of height/width ``aspect`` (ImageOps.fit, whole pixels)."""
    import tensorflow as tf

    size = tf.cast(tf.shape(image)[:2], tf.float64)
    crop_height = tf.minimum(size[0], tf.round(size[1] * aspect))
    crop_width = tf.minimum(size[1], tf.round(size[0] / aspect))
    crop = tf.cast(tf.maximum(tf.stack([crop_height, crop_width]), 1.0), tf.int32)
    offset = (tf.shape(image)[:2] - crop) // 2
    return tf.image.crop_to_bounding_box(image, offset[0], offset[1], crop[0], crop[1])
