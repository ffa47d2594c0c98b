"""The fused BatchNorm kernel trains what Keras' own layer trains, and leaves plain Keras behind."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cnnpipe.train.fused_norm import fused_batch_norm  # noqa: E402


def _digits_batch(count=64):
    """Real images: scikit-learn's digits, upscaled to 16x16, with their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images[:count], np.ones((2, 2)))[..., None].astype(np.float32) / 16
    return images, digits.target[:count]


def _model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="conv_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, name="dense")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="dense_bn")(x)  # 2D: Keras' path
    outputs = keras.layers.Dense(10, name="head")(x)
    return keras.Model(inputs, outputs)


def _train_step(model, images, labels):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = loss_fn(labels, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    return logits.numpy(), float(loss), [g.numpy() for g in grads]


def test_a_fused_training_step_matches_keras_own_layer():
    images, labels = _digits_batch()
    plain, fused = _model(), _model()
    fused.set_weights(plain.get_weights())
    expected = _train_step(plain, images, labels)
    with fused_batch_norm():
        got = _train_step(fused, images, labels)
    # atol: on an Intel Xeon (AVX-512) two of 640 logits near 0.01 differed by 1.1e-5, float32
    # rounding of a different summation order; a wrong statistic moves them by ~1e-2.
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=5e-5)
    assert got[1] == pytest.approx(expected[1], rel=1e-5)
    for grad_got, grad_expected in zip(got[2], expected[2], strict=True):
        # atol: gradients that are zero in exact arithmetic (a bias before BatchNorm) come
        # out as float32 noise of about 1e-6 from either path.
        np.testing.assert_allclose(grad_got, grad_expected, rtol=1e-3, atol=1e-5)
    # The moving statistics follow the same (biased) batch variance as Keras'.
    for name in ("conv_bn", "dense_bn"):
        for got_var, expected_var in zip(
            fused.get_layer(name).non_trainable_weights,
            plain.get_layer(name).non_trainable_weights, strict=True,
        ):
            np.testing.assert_allclose(got_var.numpy(), expected_var.numpy(), rtol=1e-4, atol=1e-6)
        assert not np.allclose(fused.get_layer(name).moving_mean.numpy(), 0.0)


def test_the_moving_variance_is_the_batch_variance_keras_uses_not_the_unbiased_one():
    # Four values per channel (a 1x1 map, batch 4): n / (n - 1) would be a third too big.
    images, _ = _digits_batch(4)
    features = images[:, 6:7, 6:9, :].reshape(4, 1, 1, 3)
    layer = keras.layers.BatchNormalization(momentum=0.0)
    with fused_batch_norm():
        layer(features, training=True)
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), features.reshape(4, 3).var(axis=0), rtol=1e-5
    )


def test_inference_and_frozen_layers_are_untouched():
    images, labels = _digits_batch(32)
    model = _model()
    model(images, training=True)  # move the statistics off their initial values
    expected = model(images, training=False).numpy()
    with fused_batch_norm():
        np.testing.assert_array_equal(model(images, training=False).numpy(), expected)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        before = [w.numpy().copy() for w in model.non_trainable_weights]
        model(images, training=True)
    for was, now in zip(before, model.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(was, now.numpy())


def test_the_swap_lasts_only_for_the_block_and_saved_models_are_plain_keras(tmp_path):
    original = keras.layers.BatchNormalization.call
    with fused_batch_norm():
        with fused_batch_norm():
            assert keras.layers.BatchNormalization.call is not original
        assert keras.layers.BatchNormalization.call is not original
        model = _model()
        model.save(tmp_path / "model.keras")
    assert keras.layers.BatchNormalization.call is original
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.get_layer("conv_bn")) is keras.layers.BatchNormalization
