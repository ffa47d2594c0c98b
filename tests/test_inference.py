"""TrainedVariant: a tiny saved model and its card in tmp_path, no pipeline run needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cnnpipe.core.errors import ConfigError, DataError  # noqa: E402
from cnnpipe.core.model_card import ImageLoading, ModelCard, TrainedAs  # noqa: E402
from cnnpipe.inference import InputSpec, TrainedVariant  # noqa: E402

SHAPE = (8, 8, 1)
CLASSES = ("circle", "square", "stripes")


def tiny_model(units: int, activation: str) -> keras.Model:
    """Takes uint8 pixels and normalizes them itself, as the pipeline's models do."""
    inputs = keras.Input(SHAPE, dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation)(x))


def write_card(folder, **fields) -> None:
    ModelCard(**{
        "variant": folder.name,
        "architecture": "tiny",
        "class_names": CLASSES,
        "raw_image_shape": SHAPE,
        "image_loading": None,
        "preprocessing": {"normalization": "unit"},
        "config": {},
        "trained_as": TrainedAs(train_images=12, batch_size=4, epochs=1),
        **fields,
    }).write(folder / "model_card.json")


def save_variant(folder, model, class_names):
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    write_card(folder, class_names=class_names)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    softmax, sigmoid = tiny_model(len(CLASSES), "softmax"), tiny_model(1, "sigmoid")
    save_variant(root / "tiny", softmax, CLASSES)
    save_variant(root / "binary", sigmoid, ("cat", "dog"))
    return {"root": root, "tiny": softmax, "binary": sigmoid}


def copy_variant(models, tmp_path, name="tiny"):
    return shutil.copytree(models["root"] / name, tmp_path / name)


def images(count=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *SHAPE), dtype=np.uint8)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


def test_load_gives_the_card_the_model_and_what_the_model_takes(models):
    trained = TrainedVariant.load(models["root"] / "tiny")
    assert trained.variant == "tiny"
    assert trained.class_names == CLASSES and trained.num_classes == 3
    assert trained.card.trained_as.batch_size == 4
    assert trained.input_spec == InputSpec(shape=SHAPE, crop_to_aspect_ratio=False)
    assert trained.input_spec.dtype == "uint8"
    assert isinstance(trained.model, keras.Model)


def test_predict_gives_what_the_saved_model_gives(models):
    trained = TrainedVariant.load(models["root"] / "tiny")
    batch = images()
    probabilities = trained.predict(batch)
    assert probabilities.shape == (5, 3) and probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities, models["tiny"].predict(batch, verbose=0),
                               atol=1e-6)
    assert trained.predict(batch[:0]).shape == (0, 3)


@pytest.mark.parametrize("name", ["tiny", "binary"])
def test_predict_batch_gives_what_predict_gives_for_every_batch_size(models, name):
    trained = TrainedVariant.load(models["root"] / name)
    for count in (1, 2, 7):
        batch = images(count, seed=count)
        fast = trained.predict_batch(batch)
        assert fast.shape == (count, trained.num_classes) and fast.dtype == np.float64
        np.testing.assert_allclose(fast, trained.predict(batch), atol=1e-5, rtol=0)
    assert trained.predict_batch(images(0)).shape == (0, trained.num_classes)
    # one trace serves every batch size: the signature's batch dimension is None
    assert trained._traced_forward.experimental_get_tracing_count() == 1
    with pytest.raises(DataError):
        trained.predict_batch(images(2).astype(np.float32))


def test_predict_takes_a_dataset_of_batches_and_ignores_its_labels(models):
    import tensorflow as tf

    trained = TrainedVariant.load(models["root"] / "tiny")
    batch = images(7)
    dataset = tf.data.Dataset.from_tensor_slices((batch, np.arange(7))).batch(3)
    np.testing.assert_allclose(trained.predict(dataset), trained.predict(batch), atol=1e-6)


def test_a_sigmoid_head_gives_two_columns(models):
    trained = TrainedVariant.load(models["root"] / "binary")
    batch = images()
    p = models["binary"].predict(batch, verbose=0)[:, 0]
    probabilities = trained.predict(batch)
    assert probabilities.shape == (5, 2)
    np.testing.assert_allclose(probabilities[:, 1], p, atol=1e-6)
    np.testing.assert_allclose(probabilities[:, 0], 1 - p, atol=1e-6)


@pytest.mark.parametrize("batch", [
    np.zeros((2, 8, 8, 3), np.uint8),  # other channels
    np.zeros((8, 8, 1), np.uint8),  # one image, not a batch
    np.zeros((2, 8, 8, 1), np.float32),  # already normalized: the model would rescale again
])
def test_a_batch_the_model_does_not_take_is_refused_in_one_line(models, batch):
    trained = TrainedVariant.load(models["root"] / "tiny")
    with pytest.raises(DataError) as exc_info:
        trained.predict(batch)
    assert "(N, 8, 8, 1)" in one_line(exc_info)


def test_a_dataset_of_other_images_is_refused_in_one_line(models):
    import tensorflow as tf

    trained = TrainedVariant.load(models["root"] / "tiny")
    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((4, 9, 9, 1), np.uint8)).batch(2)
    with pytest.raises(DataError) as exc_info:
        trained.predict(dataset)
    assert "the dataset yields uint8 (None, 9, 9, 1)" in one_line(exc_info)


def test_a_missing_card_says_dvc_repro(models, tmp_path):
    folder = copy_variant(models, tmp_path)
    (folder / "model_card.json").unlink()
    with pytest.raises(ConfigError) as exc_info:
        TrainedVariant.load(folder)
    assert "model_card.json not found" in one_line(exc_info) and "dvc repro" in str(exc_info.value)


def test_a_missing_model_says_dvc_repro_trains_it(models, tmp_path):
    folder = copy_variant(models, tmp_path)
    (folder / "model.keras").unlink()
    with pytest.raises(ConfigError) as exc_info:
        TrainedVariant.load(folder)
    assert one_line(exc_info) == f"{folder / 'model.keras'} not found; `dvc repro` trains it"


def test_a_card_from_before_card_versions_is_refused_with_dvc_repro(models, tmp_path):
    folder = copy_variant(models, tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    del card["card_version"], card["trained_as"]
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError) as exc_info:
        TrainedVariant.load(folder)
    assert "version 1 model card" in one_line(exc_info) and "dvc repro" in str(exc_info.value)


def test_a_corrupt_model_file_is_named_in_one_line(models, tmp_path):
    folder = copy_variant(models, tmp_path)
    saved = folder / "model.keras"
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    with pytest.raises(ConfigError) as exc_info:
        TrainedVariant.load(folder)
    message = one_line(exc_info)
    assert message.startswith(f"{saved} is corrupt (not a complete .keras archive")
    assert "dvc checkout" in message and "not found" not in message.lower()


@pytest.mark.parametrize("changes, says", [
    ({"class_names": ("a", "b", "c", "d")}, "names 4 classes, but"),
    ({"class_names": ("a", "b")}, "names 2 classes, but"),  # 2 classes would be one sigmoid
    ({"raw_image_shape": (16, 16, 1)}, "says the model takes 16x16x1 images, but"),
])
def test_a_card_that_disagrees_with_its_model_is_refused_in_one_line(models, tmp_path, changes,
                                                                     says):
    folder = copy_variant(models, tmp_path)
    write_card(folder, **changes)
    with pytest.raises(ConfigError) as exc_info:
        TrainedVariant.load(folder)
    message = one_line(exc_info)
    assert says in message and "different runs; retrain (dvc repro)" in message


def test_input_spec_follows_the_cards_image_loading(models, tmp_path):
    folder = copy_variant(models, tmp_path)
    loading = ImageLoading(image_size=(8, 8), channels=1, crop_to_aspect_ratio=True)
    write_card(folder, image_loading=loading)
    assert TrainedVariant.load(folder).input_spec.crop_to_aspect_ratio


def test_importing_the_package_leaves_tensorflow_unloaded():
    probe = ("import sys, cnnpipe.inference; "
             "print(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.stdout.strip() == "False", result.stderr
