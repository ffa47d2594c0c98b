import numpy as np
import pytest

from cnnpipe.core.errors import DataError, TrainingError
from cnnpipe.train.pretraining import rotation_task
from cnnpipe.train.training import make_dataset, seed_everything, train_model


def test_rotation_task_labels_match_the_rotation():
    images = np.random.default_rng(0).random((40, 5, 5, 1)).astype(np.float32)
    rotated, turns = rotation_task(images, seed=3)
    assert set(turns.tolist()) == {0, 1, 2, 3}
    for original, result, k in zip(images, rotated, turns, strict=True):
        np.testing.assert_array_equal(np.rot90(original, k, axes=(0, 1)), result)
    again, turns_again = rotation_task(images, seed=3)
    np.testing.assert_array_equal(turns, turns_again)


def test_rotation_task_refuses_non_square_images():
    with pytest.raises(DataError, match="square"):
        rotation_task(np.zeros((2, 4, 6, 1), np.float32), seed=0)


def test_shuffled_dataset_is_seeded():
    x = np.arange(50, dtype=np.float32)
    order = lambda: np.concatenate([b[0].numpy() for b in make_dataset(  # noqa: E731
        x, x, 10, shuffle=True, shuffle_buffer=50, seed=7)])
    first, second = order(), order()
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, x)


def settings(**values):
    """Resolved train settings as train@<variant> reads them."""
    return {"early_stopping_patience": 3, "shuffle_buffer": 1000, **values}


def test_nan_loss_stops_with_a_clear_error():
    from cnnpipe.models import build_model

    seed_everything(0)
    x = np.random.default_rng(0).random((32, 28, 28, 1)).astype(np.float32)
    y = np.arange(32) % 3
    model = build_model("simple_cnn", (28, 28, 1), 3, filters=(4, 8, 8), dense_units=8)
    diverging = settings(epochs=3, batch_size=8, learning_rate=1e30)
    with pytest.raises(TrainingError, match="loss became nan in epoch 1 of the training phase"):
        train_model(model, x, y, x[:8], y[:8], 3, diverging, seed=0)


def test_tiny_training_learns_and_reports():
    from cnnpipe.models import build_model

    seed_everything(0)
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    x = rng.random((200, 28, 28, 1)).astype(np.float32) * 0.2
    x[y == 1, :14] += 0.8  # class 1: bright top half
    model = build_model("simple_cnn", (28, 28, 1), 2, filters=(4, 8, 8), dense_units=8)
    result = train_model(model, x, y, x[:50], y[:50], 2,
                         settings(epochs=8, batch_size=16, learning_rate=0.01), seed=0)
    assert result.epochs_run >= 1 and 1 <= result.best_epoch <= result.epochs_run
    assert max(result.history["val_accuracy"]) > 0.9
    assert model.output_shape == (None, 1)


def test_flops_estimate_matches_a_hand_count():
    from cnnpipe.models import build_model
    from cnnpipe.train.training import estimate_flops

    model = build_model("simple_cnn", (28, 28, 1), 10, filters=(4, 8, 8), dense_units=16)
    conv1 = 26 * 26 * 4 * 9 * 1
    conv2 = 11 * 11 * 8 * 9 * 4
    conv3 = 3 * 3 * 8 * 9 * 8
    dense = 72 * 16 + 16 * 10
    assert estimate_flops(model) == 2 * (conv1 + conv2 + conv3 + dense)


def test_the_saved_model_predicts_what_the_trained_model_did(tmp_path):
    """Evaluate and predict load model.keras: it must be the trained model, and saving the
    same weights twice must give the same bytes (else DVC re-runs evaluate for nothing)."""
    import time

    from cnnpipe.evaluate.inference import load_trained_model
    from cnnpipe.models import build_model
    from cnnpipe.train.training import save_model_files

    seed_everything(0)
    rng = np.random.default_rng(0)
    y = np.arange(64) % 3
    x = rng.random((64, 28, 28, 1)).astype(np.float32)
    model = build_model("mobilenet_transfer", (28, 28, 1), 3, alpha=0.35, image_size=32,
                        dense_units=8, augmentation={"flip": "horizontal", "seed": 0})
    train_model(model, x, y, x[:16], y[:16], 3,
                settings(epochs=1, batch_size=16, learning_rate=0.01), seed=0)
    save_model_files(model, tmp_path / "a.keras", tmp_path / "a.weights.h5")
    time.sleep(1.1)  # Keras stamps the save time in seconds
    save_model_files(model, tmp_path / "b.keras", tmp_path / "b.weights.h5")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = load_trained_model(tmp_path / "a.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6
    )
