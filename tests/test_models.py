"""Architectures: registry, shapes, save/load, naming, augmentation, argument errors, transfer."""

from __future__ import annotations

import re
import socket

import keras
import numpy as np
import pytest
from fixtures import TINY_HYPERPARAMETERS

from cnnpipe.models import (
    ModelConfigError,
    available_models,
    build_model,
    classification_head_loss,
    find_backbone,
    register_model,
    set_base_trainable,
    validate_hyperparameters,
)

EXPECTED = {
    "simple_cnn",
    "regularized_cnn",
    "overfit_cnn",
    "bn_gap_cnn",
    "residual_cnn",
    "inception_attention",
    "augmented_cnn",
    "mobilenet_transfer",
}

# Tiny widths so each build and forward pass takes milliseconds on a 2-core CPU.
TINY = TINY_HYPERPARAMETERS

FULL_AUGMENTATION = {
    "flip": "horizontal_and_vertical",
    "rotation": 0.2,
    "zoom": 0.2,
    "contrast": 0.3,
    "translation": 0.1,
    "brightness": 0.2,
    "seed": 1,
}


def tiny(name: str, input_shape=(32, 32, 3), num_classes: int = 10, **overrides):
    return build_model(name, input_shape, num_classes, **{**TINY[name], **overrides})


def images(shape, n: int = 4, seed: int = 0) -> np.ndarray:
    """Raw pixels, what the models take: they normalize inside."""
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


def registry_builder(name):
    from cnnpipe.models.registry import _builder

    return _builder(name)


def test_registry_lists_all_architectures():
    names = available_models()
    assert EXPECTED <= set(names)
    assert set(TINY) == set(names), "add tiny hyperparameters for every new architecture"


@pytest.mark.parametrize("name", available_models())
def test_each_builder_takes_exactly_its_schema_and_shares_its_defaults(name):
    """params.yaml is checked against the schemas (no TensorFlow); the builders must take
    the same keys, and their keyword defaults (for direct library use) must not drift."""
    import inspect

    from cnnpipe.params.architectures import architecture_names, schema_for

    assert name in architecture_names()
    schema = schema_for(name)
    fields = {
        key: field.default for key, field in schema.model_fields.items()
        if key not in schema.training_keys()
    }
    builder = inspect.signature(registry_builder(name)).parameters
    keywords = {
        key: p.default for key, p in builder.items()
        if p.kind is p.KEYWORD_ONLY and key != "preprocessing"
    }
    assert set(keywords) == set(fields)
    for key, default in fields.items():
        if key == "augmentation" and default is not None:
            # augmented_cnn's builder turns None into its own default augmentation.
            from cnnpipe.models.architectures import DEFAULT_AUGMENTATION

            assert keywords[key] is None
            assert {k: v for k, v in default.model_dump().items() if v} == DEFAULT_AUGMENTATION
            continue
        assert keywords[key] == default, key


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("input_shape", [(32, 32, 1), (32, 32, 3)], ids=["gray", "rgb"])
@pytest.mark.parametrize("num_classes", [2, 10])
def test_build_forward_save_load(name, input_shape, num_classes, tmp_path):
    validate_hyperparameters(name, TINY[name])
    model = tiny(name, input_shape, num_classes)
    assert isinstance(model, keras.Model)
    assert model.name == name
    assert not model.compiled  # training chooses the loss and the optimizer
    assert model.layers[0].name == "image"
    assert model.input.dtype == "uint8"

    x = images(input_shape)
    y = np.asarray(model(x, training=False))
    assert y.shape == ((4, 1) if num_classes == 2 else (4, num_classes))
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert np.all((y >= 0) & (y <= 1))
    if num_classes > 2:
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == name
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), y, atol=1e-6)


@pytest.mark.parametrize("name", available_models())
def test_layers_are_named(name):
    # Built twice in one session: Keras gives unnamed layers a fresh suffix each time
    # ("dense", then "dense_1"), so only explicitly named layers keep their names.
    first, second = tiny(name), tiny(name)
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    convs = [layer for layer in all_layers(first) if isinstance(layer, keras.layers.Conv2D)]
    assert convs, "every architecture has conv layers (Grad-CAM needs one)"
    for layer in convs:
        assert not re.fullmatch(r"conv2d(_\d+)?", layer.name), layer.name
    assert first.get_layer("predictions").dtype_policy.compute_dtype == "float32"


@pytest.mark.parametrize("name", available_models())
def test_augmentation_only_acts_in_training(name):
    model = tiny(name, augmentation=FULL_AUGMENTATION)
    augment = [layer.name for layer in model.layers if layer.name.startswith("augment_")]
    assert augment == [
        "augment_flip", "augment_rotation", "augment_zoom",
        "augment_contrast", "augment_translation", "augment_brightness",
    ]
    x = images((32, 32, 3))
    np.testing.assert_array_equal(
        np.asarray(model(x, training=False)), np.asarray(model(x, training=False))
    )
    front = keras.Model(model.input, model.get_layer(augment[-1]).output)
    # Augmentation works on the 0-255 pixels, before the model normalizes them.
    np.testing.assert_allclose(np.asarray(front(x, training=False)), x, atol=1e-4)
    augmented = np.asarray(front(x, training=True))
    assert not np.allclose(augmented, x, atol=1.0)
    assert augmented.min() >= 0 and augmented.max() <= 255


def test_augmented_cnn_defaults_to_tutorial_augmentation():
    default = tiny("augmented_cnn")
    names = {layer.name for layer in default.layers}
    assert {"augment_flip", "augment_rotation", "augment_zoom", "augment_contrast"} <= names
    assert "augment_brightness" not in names
    assert default.get_layer("augment_flip").mode == "horizontal"

    plain = tiny("augmented_cnn", augmentation={})
    assert not [layer for layer in plain.layers if layer.name.startswith("augment_")]
    zeroed = tiny("augmented_cnn", augmentation={"rotation": 0, "flip": None})
    assert not [layer for layer in zeroed.layers if layer.name.startswith("augment_")]


def test_residual_shortcut_is_identity_when_widths_match():
    same = tiny("residual_cnn", stem_filters=8, residual_filters=8)
    assert "res_shortcut" not in {layer.name for layer in same.layers}
    projected = tiny("residual_cnn")
    assert projected.get_layer("res_shortcut").kernel_size == (1, 1)


def test_inception_attention_shares_its_mlp():
    model = tiny("inception_attention")
    # A shared layer is called once per descriptor (average and max pooled).
    assert len(model.get_layer("attention1_mlp_hidden")._inbound_nodes) == 2
    assert model.get_layer("attention2_scale").output.shape[-1] == model.get_layer(
        "inception2_concat"
    ).output.shape[-1]


def test_head_and_loss():
    assert classification_head_loss(2) == "binary_crossentropy"
    assert classification_head_loss(10) == "sparse_categorical_crossentropy"
    with pytest.raises(ModelConfigError, match=r"Received `num_classes=1`"):
        classification_head_loss(1)


def test_mixed_precision_keeps_float32_predictions():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny("simple_cnn")
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("conv1").compute_dtype == "float16"
    assert model.output.dtype == "float32"


# --- refusals ---------------------------------------------------------------------------


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(ModelConfigError) as info:
        build_model("resnet9000", (32, 32, 3), 10)
    message = str(info.value)
    assert message.startswith("Unknown architecture `resnet9000`. Known: ")
    assert ", ".join(available_models()) in message
    with pytest.raises(ModelConfigError, match="Unknown architecture"):
        validate_hyperparameters("resnet9000", {})


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ModelConfigError) as info:
        validate_hyperparameters("simple_cnn", {"filters": (8,), "foo": 1})
    assert str(info.value) == (
        "Architecture `simple_cnn` does not take hyperparameter `foo`; it takes: "
        "augmentation, dense_units, filters, kernel_size, preprocessing"
    )
    with pytest.raises(ModelConfigError, match="hyperparameter `num_classes`"):
        validate_hyperparameters("simple_cnn", {"num_classes": 3})
    with pytest.raises(ModelConfigError, match="hyperparameters `a`, `b`"):
        validate_hyperparameters("bn_gap_cnn", {"b": 1, "a": 2})
    validate_hyperparameters("simple_cnn", {})


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("simple_cnn")(lambda input_shape, num_classes: None)
    assert "simple_cnn" in available_models()


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize(
    ("override", "received"),
    [
        ({"num_classes": 1}, "Received `num_classes=1`"),
        ({"num_classes": 2.5}, "Received `num_classes=2.5`"),
        ({"input_shape": (32, 32)}, r"Received `input_shape=\(32, 32\)`"),
        ({"input_shape": (32, 0, 3)}, r"Received `input_shape=\(32, 0, 3\)`"),
        ({"preprocessing": {"normalization": "zscore"}}, "Received `normalization='zscore'`"),
        ({"preprocessing": {"normalization": "standardize", "mean": [1.0], "std": [2.0]}},
         r"`preprocessing.mean` must hold 3 finite numbers"),
        ({"preprocessing": {"channels": 2}}, "Received `channels=2`"),
        ({"augmentation": {"shear": 0.1}}, "Unknown augmentation key `shear`"),
        ({"augmentation": {"rotation": -0.1}}, r"Received `augmentation.rotation=-0.1`"),
        ({"augmentation": {"flip": "diagonal"}}, "Received `augmentation.flip='diagonal'`"),
    ],
)
def test_common_argument_errors(name, override, received):
    kwargs = {"input_shape": (32, 32, 3), "num_classes": 10, **TINY[name], **override}
    with pytest.raises(ModelConfigError, match=received):
        build_model(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "hyperparameters", "received"),
    [
        ("simple_cnn", {"filters": (8, -4)}, r"Received `filters=\(8, -4\)`"),
        ("simple_cnn", {"filters": ()}, r"Received `filters=\(\)`"),
        ("overfit_cnn", {"dense_units": 0}, "Received `dense_units=0`"),
        ("regularized_cnn", {"conv_dropout": 1.5}, "Received `conv_dropout=1.5`"),
        ("bn_gap_cnn", {"dropout": 1.0}, "Received `dropout=1.0`"),
        ("residual_cnn", {"stem_kernel": True}, "Received `stem_kernel=True`"),
        ("residual_cnn", {"stem_strides": 0}, "Received `stem_strides=0`"),
        ("inception_attention", {"stem_strides": 0}, "Received `stem_strides=0`"),
        ("inception_attention", {"attention_ratio": 0}, "Received `attention_ratio=0`"),
        ("mobilenet_transfer", {"image_size": 16}, "Received `image_size=16`"),
        ("mobilenet_transfer", {"alpha": -1}, "Received `alpha=-1`"),
        ("mobilenet_transfer", {"weights": "imagnet"}, "Received `weights='imagnet'`"),
        ("mobilenet_transfer", {"weights": "imagenet", "alpha": 0.3}, "Received `alpha=0.3`"),
    ],
)
def test_builder_specific_errors(name, hyperparameters, received):
    with pytest.raises(ModelConfigError, match=received):
        build_model(name, (32, 32, 3), 10, **{**TINY[name], **hyperparameters})


@pytest.mark.parametrize("name", ["residual_cnn", "inception_attention"])
def test_strided_stem_halves_the_resolution(name):
    model = build_model(name, (32, 32, 1), 10, **{**TINY[name], "stem_strides": 2})
    assert model.get_layer("stem_relu").output.shape[1:3] == (16, 16)


def test_too_small_input_for_the_pooling_depth():
    with pytest.raises(ModelConfigError, match=r"`block3_pool`.*Received `input_shape=\(4, 4, 1\)`"):
        build_model("regularized_cnn", (4, 4, 1), 10, **TINY["regularized_cnn"])
    with pytest.raises(ModelConfigError, match="too small"):
        build_model("simple_cnn", (6, 6, 1), 10)
    build_model("regularized_cnn", (8, 8, 1), 10, **TINY["regularized_cnn"])


def test_mobilenet_refuses_other_channel_counts():
    with pytest.raises(ModelConfigError, match=r"Received `input_shape=\(32, 32, 4\)`"):
        tiny("mobilenet_transfer", (32, 32, 4))


# --- transfer learning --------------------------------------------------------------------


def test_mobilenet_adapts_its_input_inside_the_model():
    # Whatever the pipeline's normalization, the backbone gets RGB at its size in [-1, 1].
    model = tiny("mobilenet_transfer", (28, 28, 1), preprocessing={
        "normalization": "standardize", "mean": [70.0], "std": [90.0],
    })
    names = [layer.name for layer in model.layers]
    assert names[:6] == [
        "image", "pixels_to_float", "gray_to_rgb", "resize", "normalize", "mobilenetv2_base",
    ]
    rescale = model.get_layer("normalize")
    assert (rescale.scale, rescale.offset) == (2.0 / 255.0, -1.0)
    front = keras.Model(model.input, rescale.output)
    ends = np.asarray(front(np.array([0, 255], np.uint8).reshape(2, 1, 1, 1).repeat(28, 1)
                            .repeat(28, 2)))
    np.testing.assert_allclose(ends[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(ends[1], 1.0, atol=1e-6)

    rgb = tiny("mobilenet_transfer", (32, 32, 3))
    assert "resize" not in {layer.name for layer in rgb.layers}
    assert "gray_to_rgb" not in {layer.name for layer in rgb.layers}

    base = find_backbone(rgb)
    assert base is rgb.get_layer("mobilenetv2_base")
    assert base.trainable, "with weights=none the whole network trains from scratch"
    assert find_backbone(tiny("simple_cnn")) is None


@pytest.mark.parametrize(
    ("preprocessing", "low", "high"),
    [
        (None, 0.0, 1.0),
        ({"normalization": "unit"}, 0.0, 1.0),
        ({"normalization": "symmetric"}, -1.0, 1.0),
        ({"normalization": "standardize", "mean": [100.0], "std": [50.0]}, -2.0, 3.1),
    ],
)
def test_the_model_normalizes_raw_pixels_itself(preprocessing, low, high):
    model = tiny("simple_cnn", (32, 32, 1), preprocessing=preprocessing)
    front = keras.Model(model.input, model.get_layer("normalize").output)
    extremes = np.stack([np.zeros((32, 32, 1), np.uint8), np.full((32, 32, 1), 255, np.uint8)])
    normalized = np.asarray(front(extremes))
    np.testing.assert_allclose(normalized[0], low, atol=1e-5)
    np.testing.assert_allclose(normalized[1], high, atol=1e-5)


def test_the_model_converts_channels_and_size_as_preprocessing_says():
    model = tiny("simple_cnn", (40, 48, 3), preprocessing={"channels": 1, "image_size": [32, 32]})
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["image", "pixels_to_float", "rgb_to_gray", "resize", "normalize"]
    assert model.get_layer("normalize").output.shape[1:] == (32, 32, 1)
    assert not model.get_layer("rgb_to_gray").trainable_weights
    # Luma as PIL computes it for mode "L": pure red is 0.299 * 255.
    red = np.zeros((1, 40, 48, 3), np.uint8)
    red[..., 0] = 255
    gray = np.asarray(keras.Model(model.input, model.get_layer("rgb_to_gray").output)(red))
    np.testing.assert_allclose(gray, 0.299 * 255, rtol=1e-5)


def pretrained_tiny(tmp_path, **overrides):
    path = tmp_path / "backbone.weights.h5"
    if not path.exists():
        find_backbone(tiny("mobilenet_transfer")).save_weights(path)
    return tiny("mobilenet_transfer", weights=str(path), **overrides)


def test_pretrained_base_is_frozen_and_keeps_batchnorm_statistics(tmp_path):
    model = pretrained_tiny(tmp_path)
    base = find_backbone(model)
    assert not base.trainable and not base.trainable_weights
    bn = next(layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))
    before = [np.array(w) for w in bn.weights]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images((32, 32, 3), n=8), np.arange(8) % 10, epochs=1, verbose=0)
    for old, new in zip(before, bn.weights, strict=True):
        np.testing.assert_array_equal(old, np.array(new))


def test_imagenet_weights_fail_fast_without_network(monkeypatch, tmp_path):
    # Deterministic offline: no DNS, and an empty Keras cache so a cached file cannot mask it.
    # "Fast" is checked by what happened, not by a clock: one look-up, no retry loop.
    lookups = []

    def no_dns(*args, **kwargs):
        lookups.append(args[0] if args else None)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path), raising=False)
    with pytest.raises(ModelConfigError) as info:
        tiny("mobilenet_transfer", weights="imagenet")
    assert 1 <= len(lookups) <= 2, lookups
    message = str(info.value)
    assert message.startswith("Could not download ImageNet weights for MobileNetV2 (no network?): ")
    assert message.endswith("Set weights to a local .weights.h5 file or none.")
    assert "\n" not in message
    assert socket.getdefaulttimeout() is None  # the download timeout was restored


def test_imagenet_weights_load_offline_from_the_keras_cache(monkeypatch, tmp_path):
    """An air-gapped team copies Keras' MobileNetV2 file into $KERAS_HOME/models/; nothing is
    downloaded. The file here is generated (random weights, the real name and shapes), and
    the built backbone must hold exactly its weights."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from cnnpipe.models import find_backbone

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path), raising=False)
    # Keras' file for alpha 0.35 without the top; sizes without their own file use 224's.
    cached = tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    cached.parent.mkdir(parents=True)
    keras.utils.set_random_seed(7)
    published = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=0.35, include_top=False, weights=None
    )
    with h5py.File(cached, "w") as handle:  # the legacy layout Keras publishes its files in
        legacy_h5_format.save_weights_to_hdf5_group(handle, published)

    model = tiny("mobilenet_transfer", weights="imagenet")
    backbone = find_backbone(model)
    assert len(backbone.weights) == len(published.weights)
    for loaded, expected in zip(backbone.weights, published.weights, strict=True):
        np.testing.assert_array_equal(np.array(loaded), np.array(expected))


def test_weights_file_round_trip(tmp_path):
    source = find_backbone(tiny("mobilenet_transfer"))
    path = tmp_path / "b.weights.h5"
    source.save_weights(path)

    keras.utils.set_random_seed(1)  # a different random init, so equality means loaded
    for weights in (str(path), path):
        loaded = find_backbone(tiny("mobilenet_transfer", weights=weights))
        for expected, actual in zip(source.get_weights(), loaded.get_weights(), strict=True):
            np.testing.assert_array_equal(actual, expected)


def test_weights_file_errors(tmp_path):
    with pytest.raises(ModelConfigError, match="does not exist"):
        tiny("mobilenet_transfer", weights=str(tmp_path / "missing.weights.h5"))

    path = tmp_path / "narrow.weights.h5"
    find_backbone(tiny("mobilenet_transfer")).save_weights(path)
    with pytest.raises(ModelConfigError, match=r"Could not load MobileNetV2 weights .*alpha=0.5"):
        tiny("mobilenet_transfer", alpha=0.5, weights=str(path))

    junk = tmp_path / "junk.weights.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ModelConfigError, match="Could not load MobileNetV2 weights"):
        tiny("mobilenet_transfer", weights=str(junk))


def test_set_base_trainable_unfreezes_the_top_layers(tmp_path):
    model = pretrained_tiny(tmp_path)
    base = find_backbone(model)
    head_weights = len(model.trainable_weights)
    weighted = [layer for layer in base.layers if layer.weights]
    batch_norms = [layer for layer in weighted if isinstance(layer, keras.layers.BatchNormalization)]
    others = [layer for layer in weighted if layer not in batch_norms]
    assert batch_norms and len(others) > 5

    set_base_trainable(model, 5)
    assert base.trainable
    assert [layer for layer in others if layer.trainable] == others[-5:]
    assert not any(layer.trainable for layer in batch_norms)
    assert len(model.trainable_weights) == head_weights + sum(
        len(layer.trainable_weights) for layer in others[-5:]
    )

    set_base_trainable(model, 10_000)  # more than there are: all non-BN layers
    assert all(layer.trainable for layer in others)
    assert not any(layer.trainable for layer in batch_norms)

    set_base_trainable(model, 0)
    assert not base.trainable and len(model.trainable_weights) == head_weights

    # The frozen state survives saving, so a reloaded model fine-tunes the same way.
    model.save(tmp_path / "m.keras")
    assert not find_backbone(keras.models.load_model(tmp_path / "m.keras")).trainable_weights


def test_set_base_trainable_refusals():
    plain = tiny("simple_cnn")
    set_base_trainable(plain, 0)  # nothing to freeze
    with pytest.raises(ModelConfigError, match="no pretrained `mobilenetv2_base`"):
        set_base_trainable(plain, 3)
    with pytest.raises(ModelConfigError, match="Received `trainable_top_layers=-1`"):
        set_base_trainable(tiny("mobilenet_transfer"), -1)


@pytest.mark.parametrize("name", available_models())
def test_batchnorm_statistics_settle_within_a_small_data_set(name, tmp_path):
    """Short runs must leave usable moving statistics (see BN_MOMENTUM); a pretrained
    backbone keeps its own, frozen."""
    norms = [layer for layer in all_layers(tiny(name))
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.momentum == 0.9 for layer in norms)
    if name == "mobilenet_transfer":
        pretrained = find_backbone(pretrained_tiny(tmp_path))
        assert all(
            layer.momentum == 0.999
            for layer in pretrained.layers if isinstance(layer, keras.layers.BatchNormalization)
        )


def test_the_params_memory_estimate_walks_the_layers_the_builders_build():
    """cnnpipe.params.memory walks each architecture on paper, without TensorFlow; the same
    parameter count as the built model shows that walk follows the builders' layers."""
    from pathlib import Path

    from cnnpipe.params import load_params
    from cnnpipe.params.memory import _Walk, _trunk

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    shape = (36, 44, 3)  # not square, not the default: a wrong size formula shows
    for name, variant in params.models.items():
        hp = variant.hyperparameters()
        if "weights" in hp:
            hp["weights"] = "none"  # the same network; pretraining is the train stage's
        if hp.get("augmentation"):
            hp["augmentation"] = {"seed": 0, **hp["augmentation"]}
        model = build_model(variant.architecture, shape, 10, **hp)
        side = hp.get("image_size")
        walk = _Walk(*((side, side, 3) if side else shape))
        _trunk(walk, variant.architecture, hp)
        walk.head(10)
        assert walk.params == model.count_params(), name
