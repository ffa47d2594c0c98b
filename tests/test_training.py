import numpy as np
import pytest

from cnnpipe.core.errors import DataError, TrainingError
from cnnpipe.core.shards import ShardSet, write_arrays
from cnnpipe.train.build import training_batches
from cnnpipe.train.pretraining import rotation_dataset, rotation_turns
from cnnpipe.train.training import (
    MAX_EPOCHS_FOR_MIN_IMAGES,
    balanced_class_weight,
    resolve_batch_size,
    resolve_epochs,
    resolve_for_data,
    seed_everything,
    train_model,
)

pytestmark = pytest.mark.minutes(0.4)


def shards(tmp_path, images, labels, name="split") -> ShardSet:
    return write_arrays(tmp_path / name, np.asarray(images, np.uint8), np.asarray(labels))


def test_rotation_labels_match_the_rotation_and_stay_with_their_image(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (40, 5, 5, 1), dtype=np.uint8)
    split = shards(tmp_path, images, np.zeros(40, int))
    turns = rotation_turns(40, seed=3)
    assert set(turns.tolist()) == {0, 1, 2, 3}
    batches = list(rotation_dataset(split.dataset(7, with_index=True), split, seed=3))
    rotated = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(labels, turns)
    for original, result, k in zip(images, rotated, turns, strict=True):
        np.testing.assert_array_equal(np.rot90(original, k, axes=(0, 1)), result)
    # Shuffled, each image still carries its own turn.
    stream = training_batches(split, 8, 3, shuffle_buffer_mb=1, with_index=True)
    shuffled = list(rotation_dataset(stream, split, seed=3))
    for images_batch, turns_batch in shuffled:
        for image, k in zip(images_batch.numpy(), turns_batch.numpy(), strict=True):
            match = [i for i, original in enumerate(images) if np.array_equal(
                np.rot90(original, k, axes=(0, 1)), image)]
            assert match and turns[match[0]] == k


def test_rotation_refuses_non_square_images(tmp_path):
    split = shards(tmp_path, np.zeros((2, 4, 6, 1)), [0, 1])
    with pytest.raises(DataError, match="square"):
        rotation_dataset(split.dataset(2, with_index=True), split, seed=0)


@pytest.mark.parametrize(
    ("batch_size", "images", "min_steps", "expected"),
    [
        (128, 54_000, 50, 128),  # Fashion-MNIST: unchanged
        (128, 1_300, 50, 26),  # digits: 50 updates an epoch instead of 11
        (128, 300, 50, 16),  # never below 16
        (8, 300, 50, 8),  # nor above what was asked for
        (128, 1_300, 0, 128),  # 0 turns the scaling off
    ],
)
def test_batch_size_scales_down_for_small_data_sets(batch_size, images, min_steps, expected):
    assert resolve_batch_size(batch_size, images, min_steps) == expected


@pytest.mark.parametrize(
    ("epochs", "fine_tune", "images", "min_seen", "expected"),
    [
        (5, 0, 54_000, 30_000, (5, 0)),  # Fashion-MNIST: unchanged
        (1, 4, 10_000, 30_000, (1, 4)),  # the MobileNet pair's 10,000 labels: unchanged
        (5, 0, 1_294, 30_000, (24, 0)),  # digits' training split
        (1, 4, 1_294, 30_000, (5, 19)),  # head and fine-tuning share the extra epochs
        (5, 0, 1_294, 0, (5, 0)),  # 0 keeps the configured epochs
        (7, 0, 144, 30_000, (100, 0)),  # overfit_cnn on 144 images: 100, not 209
        (1, 4, 144, 30_000, (20, 80)),  # the cap shared as the extra epochs are
        (120, 0, 144, 30_000, (120, 0)),  # the cap never lowers a configured count
    ],
)
def test_small_data_sets_get_more_epochs(epochs, fine_tune, images, min_seen, expected):
    from cnnpipe.train.training import MAX_EPOCHS_FOR_MIN_IMAGES

    assert resolve_epochs(epochs, images, min_seen, fine_tune) == expected
    head, tuned = expected
    most = max(epochs + fine_tune, MAX_EPOCHS_FOR_MIN_IMAGES)
    assert (head + tuned) * images >= min(min_seen, (epochs + fine_tune) * images, most * images)
    assert head + tuned <= most


def test_the_epoch_rule_record_says_when_the_cap_cut_it():
    from cnnpipe.train.training import epoch_rule_record

    overfit = {"epochs": 7, "min_images_seen": 30_000}
    assert epoch_rule_record(overfit, 144) == {
        "epochs_for_min_images_seen": 209, "epochs_capped": True}
    digits = {"epochs": 5, "min_images_seen": 30_000}
    assert epoch_rule_record(digits, 1_294) == {
        "epochs_for_min_images_seen": 24, "epochs_capped": False}
    # Fashion-MNIST's 54,000 images and the MobileNet pair's 10,000 labels: the rule is silent.
    assert epoch_rule_record({"epochs": 6, "min_images_seen": 30_000}, 54_000) == {}
    mobilenet = {"epochs": 1, "fine_tune_epochs": 4, "pretrain_epochs": 1,
                 "min_images_seen": 30_000}
    assert epoch_rule_record(mobilenet, 10_000, pretrain_images=54_000) == {}
    assert epoch_rule_record(mobilenet, 144, pretrain_images=180) == {
        "epochs_for_min_images_seen": 209, "epochs_capped": True,
        "pretrain_epochs_for_min_images_seen": 167, "pretrain_epochs_capped": True}


def test_a_pretrained_variant_resolves_its_source_task_on_every_image():
    configured = {"batch_size": 128, "epochs": 1, "fine_tune_epochs": 4, "pretrain_epochs": 1,
                  "min_steps_per_epoch": 50, "min_images_seen": 30_000}
    digits = resolve_for_data(configured, labelled=1_294, images=1_294, val_images=143)
    assert (digits["batch_size"], digits["epochs"], digits["fine_tune_epochs"]) == (25, 5, 19)
    assert (digits["pretrain_batch_size"], digits["pretrain_epochs"]) == (25, 24)
    fashion = resolve_for_data(configured, labelled=10_000, images=54_000, val_images=6_000)
    assert {k: fashion[k] for k in configured} == configured  # the defaults' own scale
    assert fashion["pretrain_batch_size"] == 128


def test_early_stopping_is_off_on_a_validation_split_too_small_to_judge():
    configured = {"batch_size": 128, "epochs": 6, "min_steps_per_epoch": 50,
                  "min_images_seen": 30_000, "early_stopping_patience": 3,
                  "early_stopping_min_val_images": 200}
    tiny = resolve_for_data(configured, labelled=140, images=140, val_images=20)
    assert tiny["early_stopping_patience"] == 0
    assert tiny["epochs"] == MAX_EPOCHS_FOR_MIN_IMAGES  # capped, and every one of them runs
    at_the_bound = resolve_for_data(configured, labelled=1_800, images=1_800, val_images=200)
    assert at_the_bound["early_stopping_patience"] == 3
    never = {**configured, "early_stopping_min_val_images": 0}
    assert resolve_for_data(never, labelled=140, images=140, val_images=1)[
        "early_stopping_patience"] == 3


def test_balanced_class_weight_evens_out_the_classes():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    weights = balanced_class_weight(labels, 4)
    counts = np.bincount(labels, minlength=4)
    # Each present class contributes the same total weight; an absent class gets 1.
    totals = [weights[c] * counts[c] for c in range(3)]
    np.testing.assert_allclose(totals, totals[0])
    assert weights[3] == 1.0 and weights[2] > weights[1] > weights[0]


def settings(**values):
    """Resolved train settings as train@<variant> uses them."""
    return {"early_stopping_patience": 3, "shuffle_buffer_mb": 16, **values}


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    from cnnpipe.models.skeleton import build_model

    seed_everything(0)
    x = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    split = shards(tmp_path, x, np.arange(32) % 3)
    model = build_model("simple_cnn", (28, 28, 1), 3, filters=(4, 8, 8), dense_units=8)
    diverging = settings(epochs=3, batch_size=8, learning_rate=1e30)
    with pytest.raises(TrainingError, match="loss became nan in epoch 1 of the training phase"):
        train_model(model, split.dataset(8), split.dataset(8), 3, diverging, images_per_epoch=32)


def test_tiny_training_learns_and_reports(tmp_path):
    from cnnpipe.models.skeleton import build_model

    seed_everything(0)
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    x = (rng.random((200, 28, 28, 1)) * 50).astype(np.uint8)
    x[y == 1, :14] += 200  # class 1: bright top half
    split = shards(tmp_path, x, y)
    model = build_model("simple_cnn", (28, 28, 1), 2, filters=(4, 8, 8), dense_units=8)
    result = train_model(
        model, split.dataset(16, shuffle=True, seed=0), split.dataset(16, subset=np.arange(50)),
        2, settings(epochs=8, batch_size=16, learning_rate=0.01), images_per_epoch=200,
    )
    assert result.epochs_run >= 1 and 1 <= result.best_epoch <= result.epochs_run
    assert max(result.history["val_accuracy"]) > 0.9
    assert result.images_seen == 200 * result.epochs_run
    assert model.output_shape == (None, 1)


def test_flops_estimate_matches_a_hand_count():
    from cnnpipe.models.skeleton import build_model
    from cnnpipe.train.saving import estimate_flops

    model = build_model("simple_cnn", (28, 28, 1), 10, filters=(4, 8, 8), dense_units=16)
    conv1 = 26 * 26 * 4 * 9 * 1
    conv2 = 11 * 11 * 8 * 9 * 4
    conv3 = 3 * 3 * 8 * 9 * 8
    dense = 72 * 16 + 16 * 10
    assert estimate_flops(model) == 2 * (conv1 + conv2 + conv3 + dense)


def test_parameter_counts_separate_what_trains():
    from cnnpipe.models.skeleton import build_model
    from cnnpipe.train.saving import count_parameters

    # RGB files for a grayscale model: the frozen luma layer's 3 weights never train.
    model = build_model("simple_cnn", (28, 28, 3), 10, preprocessing={"channels": 1},
                        filters=(4, 8, 8), dense_units=16)
    total, trainable = count_parameters(model)
    assert total == model.count_params() and trainable == total - 3


def test_init_weights_is_the_one_reader_of_the_weights_setting(tmp_path):
    """none: random; imagenet: Keras' download; a file: loaded; pretrain: the source task
    first, unless the caller (the learning-rate sweep) skips it."""
    from cnnpipe.train.build import init_weights

    def config(weights=None):
        hyperparameters = {} if weights is None else {"weights": weights}
        return {"architecture": "mobilenet_transfer", "seed": 0,
                "hyperparameters": hyperparameters}

    def decided(weights, **kwargs):
        # Data and settings are read by the pretrain path alone.
        return init_weights(config(weights), None, None, tmp_path, **kwargs)

    file = str(tmp_path / "base.weights.h5")
    assert decided(None) == (None, {})  # an architecture without the setting
    assert decided("none") == (None, {})
    assert decided("imagenet") == ("imagenet", {})
    assert decided(file) == (tmp_path / "base.weights.h5", {})
    assert decided("pretrain", pretrain=False) == (None, {})


def test_build_network_seeds_the_augmentation_with_the_run_seed():
    from cnnpipe.train.build import build_network

    config = {"architecture": "bn_gap_cnn", "seed": 11, "hyperparameters": {
        "filters": [4, 8], "dense_units": 8, "augmentation": {"flip": "horizontal", "zoom": 0.1},
    }}
    model = build_network(config, [28, 28, 1], 3, {"normalization": "symmetric"})
    assert model.name == "bn_gap_cnn" and model.output_shape == (None, 3)
    assert (model.get_layer("augment_flip").seed, model.get_layer("augment_zoom").seed) == (11, 13)
    assert model.get_layer("normalize").offset == -1.0


def test_the_saved_model_predicts_what_the_trained_model_did(tmp_path):
    """Evaluate and predict load model.keras: it must be the trained model, and saving the
    same weights twice must give the same bytes (else DVC re-runs evaluate for nothing)."""
    import time

    import keras

    from cnnpipe.models.skeleton import build_model
    from cnnpipe.train.saving import save_model_files

    seed_everything(0)
    rng = np.random.default_rng(0)
    y = np.arange(64) % 3
    x = rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)
    split = shards(tmp_path, x, y)
    model = build_model(
        "mobilenet_transfer", (28, 28, 1), 3, alpha=0.35, image_size=32, dense_units=8,
        augmentation={"flip": "horizontal"}, augmentation_seed=0,
        preprocessing={"normalization": "standardize", "mean": [127.0], "std": [70.0]},
    )
    train_model(model, split.dataset(16, shuffle=True), split.dataset(16), 3,
                settings(epochs=1, batch_size=16, learning_rate=0.01), images_per_epoch=64)
    save_model_files(model, tmp_path / "a.keras", tmp_path / "a.weights.h5")
    time.sleep(1.1)  # Keras stamps the save time in seconds
    save_model_files(model, tmp_path / "b.keras", tmp_path / "b.weights.h5")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = keras.saving.load_model(tmp_path / "a.keras", compile=False)  # as TrainedVariant
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6
    )


def test_balanced_class_weight_raises_balanced_accuracy_on_imbalanced_digits(tmp_path):
    """Real data, one class 10x rarer than the others (as in many medical sets)."""
    from sklearn.datasets import load_digits
    from sklearn.metrics import balanced_accuracy_score

    from cnnpipe.models.skeleton import build_model

    digits = load_digits()
    x = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    y = digits.target
    order = np.random.default_rng(0).permutation(len(y))
    test, pool = order[:500], order[500:]
    rare = 3
    train = np.concatenate([pool[y[pool] != rare], pool[y[pool] == rare][:12]])
    counts = np.bincount(y[train])
    assert counts[rare] * 10 <= np.delete(counts, rare).min()
    train_split = shards(tmp_path, x[train], y[train], "train")
    test_split = shards(tmp_path, x[test], y[test], "test")

    def balanced_accuracy(class_weight):
        seed_everything(0)
        model = build_model("simple_cnn", (8, 8, 1), 10, filters=(16, 32), dense_units=32)
        train_model(
            model, train_split.dataset(32, shuffle=True, seed=0), test_split.dataset(64), 10,
            settings(epochs=4, batch_size=32, learning_rate=0.003, early_stopping_patience=0),
            images_per_epoch=len(train), class_weight=class_weight,
        )
        predicted = model.predict(test_split.dataset(64), verbose=0).argmax(axis=1)
        return balanced_accuracy_score(y[test], predicted), np.mean(predicted[y[test] == rare] == rare)

    plain, plain_recall = balanced_accuracy(None)
    weighted, weighted_recall = balanced_accuracy(balanced_class_weight(y[train], 10))
    assert weighted_recall > plain_recall + 0.3, (plain_recall, weighted_recall)
    assert weighted > plain + 0.01, (plain, weighted)


def _rates(model, steps: int) -> list[float]:
    rate = model.optimizer.learning_rate if not hasattr(model.optimizer, "_learning_rate") \
        else model.optimizer._learning_rate
    return [float(rate(step)) if callable(rate) else float(rate) for step in range(steps)]


@pytest.mark.parametrize(
    ("recipe", "check"),
    [
        ({"lr_schedule": "constant"}, lambda r: r == pytest.approx([0.01] * len(r))),
        # Warm-up from 0 over a quarter of the steps, then down to about 0 by the last one.
        ({"lr_schedule": "cosine", "warmup_epochs": 1.0},
         lambda r: r[0] == 0 and max(r) == pytest.approx(0.01) and r.index(max(r)) == 5
         and r[-1] < 0.0002),
        # One-cycle: from peak/25 up over 30% of the steps, then down.
        ({"lr_schedule": "one_cycle"},
         lambda r: r[0] == pytest.approx(0.0004) and r.index(max(r)) == 6 and r[-1] < 0.0002),
    ],
)
def test_schedules_span_the_whole_phase(recipe, check):
    from cnnpipe.models.skeleton import build_model
    from cnnpipe.train.training import compile_model

    model = build_model("simple_cnn", (8, 8, 1), 3, filters=(4,), dense_units=4)
    compile_model(model, 3, 0.01, recipe, epochs=4, steps_per_epoch=5)
    rates = _rates(model, 20)
    assert check(rates), rates


@pytest.mark.parametrize(
    ("recipe", "optimizer", "loss"),
    [
        ({"optimizer": "adamw", "weight_decay": 1e-4}, "AdamW", "sparse_categorical_crossentropy"),
        ({"optimizer": "sgd", "label_smoothing": 0.1}, "SGD", "'label_smoothing': 0.1"),
    ],
)
def test_recipes_train_on_real_digits_and_save_without_custom_objects(
    tmp_path, recipe, optimizer, loss
):
    """Every optimizer and label smoothing train (loss falls) on digits with class weights,
    and the saved model loads in plain Keras."""
    import keras
    from sklearn.datasets import load_digits

    from cnnpipe.models.skeleton import build_model
    from cnnpipe.train.saving import save_model_files

    digits = load_digits()
    x = np.round(digits.images[:400] * 255 / 16).astype(np.uint8)[..., None]
    y = digits.target[:400]
    split = shards(tmp_path, x, y)
    seed_everything(0)
    model = build_model("simple_cnn", (8, 8, 1), 10, filters=(16,), dense_units=32)
    result = train_model(
        model, split.dataset(32, shuffle=True, seed=0), split.dataset(100), 10,
        settings(epochs=3, batch_size=32, learning_rate=0.02, early_stopping_patience=0,
                 lr_schedule="cosine", **recipe),
        images_per_epoch=len(y), class_weight=balanced_class_weight(y, 10),
    )
    assert type(model.optimizer).__name__ == optimizer
    assert loss in str(model.loss)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.history["val_accuracy"][-1] > 0.4
    save_model_files(model, tmp_path / "m.keras", tmp_path / "m.weights.h5")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0),
                               atol=1e-6)
