"""Resuming a killed training run (cnnpipe.train.resume): the shuffle replay, batch by batch,
and a run stopped after epoch 2 of 4 that ends with the uninterrupted run's weights."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cnnpipe.core.shards import write_arrays
from cnnpipe.train.resume import ITERATORS_PER_EPOCH, ResumeStore
from cnnpipe.train.training import seed_everything, train_model

SEED = 11
SETTINGS = {"epochs": 4, "learning_rate": 3e-3, "early_stopping_patience": 10,
            "lr_schedule": "cosine", "warmup_epochs": 1.0}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 16).clip(0, 255).astype(np.uint8)[..., None]
    # Several shards, so that both shuffle levels (shard order, record buffer) take part.
    return write_arrays(tmp_path_factory.mktemp("digits") / "train", images,
                        digits.target.astype(np.int32), chunk=400)


def batches(shards):
    return shards.dataset(32, shuffle=True, seed=SEED, shuffle_buffer_mb=1,
                          subset=np.arange(0, len(shards), 2))


def epoch_digest(iterator) -> str:
    return hashlib.sha256(b"".join(x.numpy().tobytes() + y.numpy().tobytes()
                                   for x, y in iterator)).hexdigest()


def test_fit_opens_the_iterators_the_replay_assumes(shards, monkeypatch):
    import tensorflow as tf

    opened = []
    original = tf.data.Dataset.__iter__
    monkeypatch.setattr(tf.data.Dataset, "__iter__",
                        lambda self: opened.append(1) or original(self))
    seed_everything(SEED)
    model = tiny_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(batches(shards), epochs=3, verbose=0, shuffle=False)
    assert len(opened) == 3 * ITERATORS_PER_EPOCH


def test_discarded_iterators_replay_the_shuffle_byte_for_byte(shards):
    seed_everything(SEED)
    dataset = batches(shards)
    uninterrupted = [epoch_digest(iter(dataset)) for _ in range(4)]
    assert len(set(uninterrupted)) == 4  # every epoch in a new order
    seed_everything(SEED)
    resumed = batches(shards)
    for _ in range(2):
        iter(resumed)  # opened, never read
    assert [epoch_digest(iter(resumed)) for _ in range(2)] == uninterrupted[2:]


def tiny_model():
    import keras

    inputs = keras.Input((8, 8, 1), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 16, name="scale")(inputs)
    x = keras.layers.RandomTranslation(0.1, 0.1, seed=SEED, name="shift")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="tiny")


class Killed(Exception):
    pass


def train(shards, val, store, callbacks=()):
    seed_everything(SEED)
    model = tiny_model()
    result = train_model(model, batches(shards), val, 10, SETTINGS, images_per_epoch=450,
                         callbacks=callbacks, resume=store)
    return model, result


def test_a_run_killed_after_epoch_2_resumes_to_identical_weights(shards, tmp_path, capsys):
    import keras

    val = shards.dataset(64)
    plain_model, plain = train(shards, val, None)
    saving = ResumeStore("tiny", "f1", tmp_path)
    saved_model, saved = train(shards, val, saving)
    # Saving every epoch changes nothing in an uninterrupted run.
    assert_same_weights(plain_model, saved_model)
    assert saved.history == plain.history
    assert saving.state["completed"] == ["head"]
    saving.remove()  # as the stage does on success
    assert not (tmp_path / "tiny").exists()

    class KillAfterEpoch2(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Killed

    with pytest.raises(Killed):
        train(shards, val, ResumeStore("tiny", "f1", tmp_path), [KillAfterEpoch2()])
    store = ResumeStore("tiny", "f1", tmp_path)
    assert store.state["phases"] == ["head", "head"]
    store.announce()
    assert f"resuming train@tiny at epoch 3 (phase head) from {tmp_path / 'tiny'}" in capsys.readouterr().out
    resumed_model, resumed = train(shards, val, store)
    assert_same_weights(plain_model, resumed_model)
    assert resumed.history == plain.history
    assert (resumed.epochs_run, resumed.best_epoch) == (plain.epochs_run, plain.best_epoch)
    assert int(resumed_model.optimizer.iterations) == int(plain_model.optimizer.iterations)


def test_a_state_from_other_settings_is_dropped(tmp_path, capsys):
    directory = tmp_path / "tiny"
    directory.mkdir()
    (directory / "state.json").write_text('{"fingerprint": "old", "phases": []}')
    assert ResumeStore("tiny", "new", tmp_path).state is None
    assert not directory.exists()
    assert "discarding the saved state" in capsys.readouterr().out


def assert_same_weights(expected, actual):
    for want, got in zip(expected.variables, actual.variables, strict=True):
        assert np.asarray(want).tobytes() == np.asarray(got).tobytes(), want.path
