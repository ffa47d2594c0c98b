"""Architectures: registrations, shapes, save/load, naming, augmentation, argument errors,
memory walks, transfer."""

from __future__ import annotations

import re
import socket

import keras
import numpy as np
import pytest
from fixtures import TINY_HYPERPARAMETERS

from cnnpipe.models import (
    Architecture,
    ModelConfigError,
    available_models,
    classification_head_loss,
    find_architecture,
    get_architecture,
    register_architecture,
    registered,
)
from cnnpipe.models.finetune import find_backbone, set_base_trainable
from cnnpipe.models.skeleton import build_model
from cnnpipe.models.walk import ShapeWalk

pytestmark = pytest.mark.minutes(1.7)  # the quick tier's longest module: started first

EXPECTED = {
    "simple_cnn",
    "regularized_cnn",
    "overfit_cnn",
    "bn_gap_cnn",
    "residual_cnn",
    "inception_attention",
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
}
# MobileNetV2's split: the nested model that fine-tuning freezes and unfreezes.
SPLIT = get_architecture("mobilenet_transfer").fine_tune


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


def backbone(model):
    return find_backbone(model, SPLIT.backbone)


def walked(name, input_shape, num_classes=10, **hyperparameters) -> ShapeWalk:
    """The registration's memory walk of the network ``build_model`` builds (no TensorFlow)."""
    architecture = get_architecture(name)
    settings = architecture.settings(hyperparameters)
    walk = ShapeWalk(*architecture.input_needs.model_shape(settings, input_shape))
    architecture.walk(walk, settings)
    walk.head(num_classes)
    return walk


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


def test_registry_lists_all_architectures():
    names = available_models()
    assert EXPECTED <= set(names)
    assert set(TINY) == set(names)
    for name in names:
        architecture = get_architecture(name)
        assert architecture.name == name and find_architecture(name) is architecture
        assert architecture.description, name
        architecture.settings(architecture.tiny)  # every tiny configuration is valid
    # The food classifier is a bn_gap_cnn variant with augmentation now, not an architecture.
    assert find_architecture("augmented_cnn") is None


@pytest.mark.parametrize("name", available_models())
def test_each_registration_builds_its_schema_defaults_and_walks_the_same_layers(name):
    """params.yaml is checked against the schemas and the memory estimate walks the layers
    on paper (no TensorFlow): with every default and with the tiny configuration, at a
    non-square size, the walk counts exactly the parameters of the model the trunk builds."""
    shape = (18, 22, 1)  # small enough for overfit_cnn's 512-wide defaults to build quickly
    for hyperparameters in ({}, TINY[name]):
        keras.backend.clear_session()
        model = build_model(name, shape, 10, **hyperparameters)
        assert model.count_params() == walked(name, shape, **hyperparameters).params, (
            name, hyperparameters)


@pytest.mark.parametrize("name", available_models())
@pytest.mark.parametrize("input_shape", [(32, 32, 1), (32, 32, 3)], ids=["gray", "rgb"])
@pytest.mark.parametrize("num_classes", [2, 10])
def test_build_forward_save_load(name, input_shape, num_classes, tmp_path):
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
    model = tiny(name, augmentation=FULL_AUGMENTATION, augmentation_seed=1)
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


def test_augmentation_is_off_unless_a_layer_is_asked_for():
    for augmentation in (None, {}, {"rotation": 0, "flip": None}):
        model = tiny("bn_gap_cnn", augmentation=augmentation, augmentation_seed=3)
        assert not [layer for layer in model.layers if layer.name.startswith("augment_")]


def test_the_augmented_cnn_variant_is_bn_gap_cnn_behind_its_own_augmentation():
    """params.yaml's food classifier: the pet classifier's layers behind in-model random
    layers, each seeded from the run's seed (offset by its position) so a rerun augments
    identically."""
    from pathlib import Path

    from cnnpipe.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    variant = params.models["augmented_cnn"]
    assert variant.architecture == "bn_gap_cnn"
    hyperparameters = {**variant.hyperparameters(), **TINY["bn_gap_cnn"]}
    augmented = build_model("bn_gap_cnn", (32, 32, 1), 10, augmentation_seed=params.seed,
                            **hyperparameters)
    names = [layer.name for layer in augmented.layers]
    assert [n for n in names if n.startswith("augment_")] == ["augment_flip"]
    assert augmented.get_layer("augment_flip").mode == "horizontal"
    assert augmented.get_layer("augment_flip").seed == params.seed
    plain = tiny("bn_gap_cnn", (32, 32, 1))
    assert [n for n in names if not n.startswith("augment_")] == [
        layer.name for layer in plain.layers
    ]
    assert augmented.count_params() == plain.count_params()
    seeded = tiny("bn_gap_cnn", augmentation={"flip": "horizontal", "zoom": 0.1},
                  augmentation_seed=5)
    assert (seeded.get_layer("augment_flip").seed, seeded.get_layer("augment_zoom").seed) == (5, 7)


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


# --- registrations ------------------------------------------------------------------------


def test_registration_is_checked_and_a_duplicate_is_refused():
    with pytest.raises(ValueError, match="`simple_cnn` is registered twice"):
        register_architecture(get_architecture("simple_cnn"))
    assert "simple_cnn" in available_models()
    bn_gap = get_architecture("bn_gap_cnn")
    parts = {"schema": bn_gap.schema, "trunk": bn_gap.trunk, "walk": bn_gap.walk, "tiny": {},
             "description": "a copy"}
    with pytest.raises(ValueError, match="lower-case identifiers"):
        register_architecture(Architecture(name="BadName", **parts))
    with pytest.raises(ValueError, match=r"its schema declares architecture \('bn_gap_cnn',\)"):
        register_architecture(Architecture(name="gap_copy", **parts))
    assert "gap_copy" not in available_models()


def test_a_new_architecture_is_one_registration():
    """What adding an architecture takes: a schema, a trunk on the shared skeleton, its walk."""
    from typing import Literal

    from pydantic import Field

    from cnnpipe.models.registry import plain_trunk
    from cnnpipe.models.schema import PositiveInt, Variant

    class OneConv(Variant):
        architecture: Literal["one_conv"]
        width: PositiveInt = Field(4, description="the conv's width")

    def layers(x, hp, input_shape):
        x = keras.layers.Conv2D(hp.width, 3, padding="same", name="conv")(x)
        return keras.layers.GlobalAveragePooling2D(name="gap")(x)

    def walk(walk, hp):
        walk.conv(hp.width, 3)
        walk.global_pool()

    toy = Architecture(name="one_conv", schema=OneConv, trunk=plain_trunk(layers), walk=walk,
                       tiny={"width": 2}, description="one conv")
    with registered(toy):
        assert "one_conv" in available_models()
        model = build_model("one_conv", (16, 16, 3), 10, width=6)
        assert [layer.name for layer in model.layers][-3:] == ["conv", "gap", "predictions"]
        assert model.count_params() == walked("one_conv", (16, 16, 3), width=6).params
        with pytest.raises(ModelConfigError, match="Received `width=0`"):
            build_model("one_conv", (16, 16, 3), 10, width=0)
        with pytest.raises(ModelConfigError, match="no backbone to load weights into"):
            build_model("one_conv", (16, 16, 3), 10, backbone_weights="imagenet")
    assert "one_conv" not in available_models()


# --- refusals ---------------------------------------------------------------------------


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(ModelConfigError) as info:
        build_model("resnet9000", (32, 32, 3), 10)
    message = str(info.value)
    assert message.startswith("Unknown architecture `resnet9000`. Known: ")
    assert ", ".join(available_models()) in message
    with pytest.raises(ModelConfigError, match="Unknown architecture `augmented_cnn`"):
        get_architecture("augmented_cnn")
    assert find_architecture("resnet9000") is None and find_architecture(None) is None


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ModelConfigError) as info:
        build_model("simple_cnn", (32, 32, 3), 10, filters=(8,), foo=1)
    assert str(info.value) == "`foo`: Extra inputs are not permitted. Received `foo=1`"
    settings = get_architecture("simple_cnn").settings
    with pytest.raises(ModelConfigError, match="`num_classes`: Extra inputs are not permitted"):
        settings({"num_classes": 3})
    with pytest.raises(ModelConfigError, match="`b`: Extra inputs are not permitted"):
        get_architecture("bn_gap_cnn").settings({"b": 1, "a": 2})
    # The seed is the run's (build_model's augmentation_seed), not an augmentation setting.
    with pytest.raises(ModelConfigError, match="`augmentation.seed`: Extra inputs"):
        settings({"augmentation": {"seed": 1}})
    assert settings({}).filters == (32, 64, 64)


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
        ({"augmentation": {"shear": 0.1}}, "`augmentation.shear`: Extra inputs are not permitted"),
        ({"augmentation": "flip"}, "Received `augmentation='flip'`"),
        ({"augmentation": {"rotation": -0.1}}, r"Received `augmentation.rotation=-0.1`"),
        ({"augmentation": {"flip": "diagonal"}}, "Received `augmentation.flip='diagonal'`"),
    ],
)
def test_common_argument_errors(name, override, received):
    kwargs = {"input_shape": (32, 32, 3), "num_classes": 10, **TINY[name], **override}
    with pytest.raises(ModelConfigError, match=received):
        build_model(name, **kwargs)


def test_training_settings_are_no_hyperparameters():
    """The schema validates a variant's training keys too; the builder refuses them, so a
    caller who passes one learns that it does nothing to the network."""
    with pytest.raises(ModelConfigError, match="^`fine_tune_layers` is a training setting"):
        build_model("mobilenet_transfer", (32, 32, 3), 10, fine_tune_layers=2)
    with pytest.raises(ModelConfigError, match="Received `fine_tune_layers=-1`"):
        get_architecture("mobilenet_transfer").settings({"fine_tune_layers": -1})


@pytest.mark.parametrize(
    ("name", "hyperparameters", "received"),
    [
        ("simple_cnn", {"filters": (8, -4)}, r"^`filters.1`: Input should be greater than 0. "
         r"Received `filters.1=-4`$"),
        ("simple_cnn", {"filters": ()}, r"Received `filters=\(\)`"),
        ("simple_cnn", {"filters": "wide"}, r"Received `filters='wide'`"),
        ("overfit_cnn", {"dense_units": 0}, "^`dense_units`: Input should be greater than 0. "
         "Received `dense_units=0`$"),
        ("overfit_cnn", {"kernel_size": 2.0}, "Received `kernel_size=2.0`"),
        ("regularized_cnn", {"conv_dropout": 1.5}, "Received `conv_dropout=1.5`"),
        ("bn_gap_cnn", {"dropout": 1.0}, "Received `dropout=1.0`"),
        ("residual_cnn", {"stem_kernel": True}, "Received `stem_kernel=True`"),
        ("residual_cnn", {"stem_strides": 0}, "Received `stem_strides=0`"),
        ("inception_attention", {"stem_strides": 0}, "Received `stem_strides=0`"),
        ("inception_attention", {"attention_ratio": 0}, "Received `attention_ratio=0`"),
        ("mobilenet_transfer", {"image_size": 16}, "Received `image_size=16`"),
        ("mobilenet_transfer", {"alpha": -1}, "Received `alpha=-1`"),
        ("mobilenet_transfer", {"weights": "imagnet"}, "^`weights`: must be none, imagenet, "
         "pretrain or the path of a .weights.h5 file. Received `weights='imagnet'`$"),
        ("mobilenet_transfer", {"weights": "imagenet", "alpha": 0.3},
         r"^`mobilenet_transfer`: alpha 0.3 has no ImageNet weights; use one of 0.35, 0.5"),
    ],
)
def test_builder_specific_errors(name, hyperparameters, received):
    """Validated once, by the schema, in one line naming the key."""
    with pytest.raises(ModelConfigError, match=received) as info:
        build_model(name, (32, 32, 3), 10, **{**TINY[name], **hyperparameters})
    assert "\n" not in str(info.value)
    with pytest.raises(ModelConfigError, match=received):
        get_architecture(name).settings({**TINY[name], **hyperparameters})


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


@pytest.mark.parametrize(
    "name", [n for n in available_models() if get_architecture(n).input_needs.side_key is None]
)
def test_the_walk_refuses_exactly_the_sizes_the_trunk_refuses(name):
    """params validation refuses images too small for a variant from the walk alone; the
    trunk (what training builds) draws the same line."""

    def walks(side):
        try:
            walked(name, (side, side + 1, 1), **TINY[name])
        except ModelConfigError as error:
            assert "too small" in str(error) and "\n" not in str(error)
            return False
        return True

    smallest = next(side for side in range(1, 64) if walks(side))
    build_model(name, (smallest, smallest + 1, 1), 10, **TINY[name])
    if smallest > 1:
        with pytest.raises(ModelConfigError, match="too small"):
            build_model(name, (smallest - 1, smallest, 1), 10, **TINY[name])


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

    base = backbone(rgb)
    assert base is rgb.get_layer("mobilenetv2_base")
    assert base.trainable, "without backbone weights the whole network trains from scratch"
    assert backbone(tiny("simple_cnn")) is None
    assert get_architecture("simple_cnn").fine_tune is None


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
        backbone(tiny("mobilenet_transfer")).save_weights(path)
    return tiny("mobilenet_transfer", backbone_weights=path, **overrides)


def test_pretrained_base_is_frozen_and_keeps_batchnorm_statistics(tmp_path):
    model = pretrained_tiny(tmp_path)
    base = backbone(model)
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
        tiny("mobilenet_transfer", backbone_weights="imagenet")
    assert 1 <= len(lookups) <= 2, lookups
    message = str(info.value)
    assert message.startswith("Could not download ImageNet weights for MobileNetV2 (no network?): ")
    assert message.endswith("Set weights to a local .weights.h5 file or none.")
    assert "\n" not in message
    assert socket.getdefaulttimeout() is None  # the download timeout was restored


def test_the_weights_setting_is_validated_but_only_backbone_weights_load(monkeypatch, tmp_path):
    """`weights` is the variant's setting, read by cnnpipe.train.build.init_weights alone:
    the builder validates it with the schema and never downloads or loads because of it."""

    def no_dns(*args, **kwargs):
        raise AssertionError("build_model tried to download")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path), raising=False)
    for weights in ("imagenet", "pretrain", "none"):
        model = tiny("mobilenet_transfer", weights=weights)
        assert backbone(model).trainable, weights  # random weights, trained from scratch


def test_imagenet_weights_load_offline_from_the_keras_cache(monkeypatch, tmp_path):
    """An air-gapped team copies Keras' MobileNetV2 file into $KERAS_HOME/models/; nothing is
    downloaded. The file here is generated (random weights, the real name and shapes), and
    the built backbone must hold exactly its weights."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

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

    model = tiny("mobilenet_transfer", backbone_weights="imagenet")
    base = backbone(model)
    assert not base.trainable
    assert len(base.weights) == len(published.weights)
    for loaded, expected in zip(base.weights, published.weights, strict=True):
        np.testing.assert_array_equal(np.array(loaded), np.array(expected))


def test_weights_file_round_trip(tmp_path):
    source = backbone(tiny("mobilenet_transfer"))
    path = tmp_path / "b.weights.h5"
    source.save_weights(path)

    keras.utils.set_random_seed(1)  # a different random init, so equality means loaded
    for weights in (str(path), path):
        loaded = backbone(tiny("mobilenet_transfer", backbone_weights=weights))
        for expected, actual in zip(source.get_weights(), loaded.get_weights(), strict=True):
            np.testing.assert_array_equal(actual, expected)


def test_weights_file_errors(tmp_path):
    missing = tmp_path / "missing.weights.h5"
    with pytest.raises(ModelConfigError,
                       match="`weights`: names a weights file that does not exist"):
        tiny("mobilenet_transfer", weights=str(missing))
    with pytest.raises(ModelConfigError, match="Could not load MobileNetV2 weights"):
        tiny("mobilenet_transfer", backbone_weights=missing)

    path = tmp_path / "narrow.weights.h5"
    backbone(tiny("mobilenet_transfer")).save_weights(path)
    with pytest.raises(ModelConfigError, match=r"Could not load MobileNetV2 weights .*alpha=0.5"):
        tiny("mobilenet_transfer", alpha=0.5, backbone_weights=path)

    junk = tmp_path / "junk.weights.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ModelConfigError, match="Could not load MobileNetV2 weights"):
        tiny("mobilenet_transfer", backbone_weights=junk)
    with pytest.raises(ModelConfigError, match="`simple_cnn` has no backbone to load weights into"):
        tiny("simple_cnn", backbone_weights=path)


def test_set_base_trainable_unfreezes_the_top_layers(tmp_path):
    model = pretrained_tiny(tmp_path)
    base = backbone(model)
    head_weights = len(model.trainable_weights)
    weighted = [layer for layer in base.layers if layer.weights]
    batch_norms = [layer for layer in weighted if isinstance(layer, keras.layers.BatchNormalization)]
    others = [layer for layer in weighted if layer not in batch_norms]
    assert batch_norms and len(others) > 5

    set_base_trainable(model, 5, SPLIT)
    assert base.trainable
    assert [layer for layer in others if layer.trainable] == others[-5:]
    assert not any(layer.trainable for layer in batch_norms)
    assert len(model.trainable_weights) == head_weights + sum(
        len(layer.trainable_weights) for layer in others[-5:]
    )

    set_base_trainable(model, 10_000, SPLIT)  # more than there are: all non-BN layers
    assert all(layer.trainable for layer in others)
    assert not any(layer.trainable for layer in batch_norms)

    set_base_trainable(model, 5, SPLIT, "train")  # and the BatchNorm layers above the lowest
    lowest = base.layers.index(others[-5])
    above = [layer for layer in batch_norms if base.layers.index(layer) > lowest]
    assert above and len(above) < len(batch_norms)
    assert [layer for layer in batch_norms if layer.trainable] == above
    assert [layer for layer in others if layer.trainable] == others[-5:]

    set_base_trainable(model, 0, SPLIT)
    assert not base.trainable and len(model.trainable_weights) == head_weights

    # The frozen state survives saving, so a reloaded model fine-tunes the same way.
    model.save(tmp_path / "m.keras")
    assert not backbone(keras.models.load_model(tmp_path / "m.keras")).trainable_weights


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_fine_tuning_moves_batchnorm_statistics_only_when_asked(batchnorm, tmp_path):
    model = pretrained_tiny(tmp_path)
    set_base_trainable(model, 10_000, SPLIT, batchnorm)
    norms = [layer for layer in backbone(model).layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    before = [np.array(layer.moving_mean) for layer in norms]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images((32, 32, 3), n=8), np.arange(8) % 10, epochs=1, verbose=0)
    moved = [not np.array_equal(old, np.array(layer.moving_mean))
             for old, layer in zip(before, norms, strict=True)]
    assert all(moved) if batchnorm == "train" else not any(moved)


def test_set_base_trainable_refusals():
    plain = tiny("simple_cnn")
    set_base_trainable(plain, 0, None)  # nothing to freeze
    set_base_trainable(plain, 0, SPLIT)
    for split in (None, SPLIT):
        with pytest.raises(ModelConfigError, match=r"^Model `simple_cnn` has no pretrained "
                           r"backbone to fine-tune. Received `trainable_top_layers=3`$"):
            set_base_trainable(plain, 3, split)
    # A backbone without the split that names it: nothing is unfrozen by accident.
    with pytest.raises(ModelConfigError, match="no pretrained backbone"):
        set_base_trainable(tiny("mobilenet_transfer"), 3, None)


@pytest.mark.parametrize("name", available_models())
def test_batchnorm_statistics_settle_within_a_small_data_set(name, tmp_path):
    """Short runs must leave usable moving statistics (see BN_MOMENTUM), a pretrained
    backbone's too when fine-tuning trains them."""
    models = [tiny(name)] + ([pretrained_tiny(tmp_path)] if name == "mobilenet_transfer" else [])
    for model in models:
        norms = [layer for layer in all_layers(model)
                 if isinstance(layer, keras.layers.BatchNormalization)]
        assert all(layer.momentum == 0.9 for layer in norms)


def test_the_params_memory_estimate_walks_the_layers_the_builders_build():
    """cnnpipe.params.memory estimates each params.yaml variant from its registration's walk,
    without TensorFlow; its weights term (4 float32 copies of every parameter) matching the
    built model shows that walk follows the trunk's layers."""
    from pathlib import Path

    from cnnpipe.params import load_params
    from cnnpipe.params.memory import COPIES_PER_WEIGHT, FLOAT_BYTES, training_memory

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    shape = (36, 44, 3)  # not square, not the default: a wrong size formula shows
    for name, variant in params.models.items():
        keras.backend.clear_session()
        # No backbone_weights: the same network, pretraining is the train stage's.
        model = build_model(variant.architecture, shape, 10, augmentation_seed=params.seed,
                            **variant.hyperparameters())
        estimate = training_memory(variant, shape, shape, 32, 10)
        assert estimate.weights == model.count_params() * FLOAT_BYTES * COPIES_PER_WEIGHT, name
        side = getattr(variant, "image_size", None)
        assert estimate.model_shape == ((side, side, 3) if side else shape), name
