"""Seeding, the batch size and class weights a data set gets, and fitting a built model."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnpipe.core.errors import TrainingError


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds plus deterministic kernels.

    TensorFlow promises identical results only on the same hardware, thread count and
    library versions; within that, two runs give bitwise-identical weights.
    """
    import keras
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def resolve_batch_size(batch_size: int, images: int, min_steps_per_epoch: int) -> int:
    """The batch size a data set of ``images`` trains with: at most ``batch_size``, small
    enough for ``min_steps_per_epoch`` updates per epoch (0 turns the scaling off).

    BatchNorm's moving statistics follow the batches with momentum 0.99: with about ten
    steps an epoch (batch 128 on a thousand images) they stay near their initial values, the
    model scores at chance in inference mode and early stopping keeps epoch 1. Never below
    16 (or ``batch_size``), where batch statistics themselves get too noisy.
    """
    if min_steps_per_epoch <= 0:
        return batch_size
    return max(min(batch_size, images // min_steps_per_epoch), min(16, batch_size))


# The most epochs the minimum-images rule raises a run to. sklearn's digits (1,294 training
# images) get 24, measured to lift inception_attention from 0.74 to 0.96 and mobilenet_scratch
# from 0.80 to 0.93 (bench/RESULTS.md). Below about 1,000 images the rule asks for ever more
# passes over the same few images: 209 at 144, where overfit_cnn ran 174. On 140 digits, with
# every epoch run and the last weights kept, inception_attention scored 0.43 at a cap of 30,
# 0.80 at 60 and 0.88 at 100, mobilenet_transfer 0.70, 0.83 and 0.88, simple_cnn 0.93 at each
# (bench/small_folders.py). A configured count above it is never lowered.
MAX_EPOCHS_FOR_MIN_IMAGES = 100


def epochs_for_min_images(total: int, images: int, min_images_seen: int) -> int:
    """Epochs that show ``images`` a run ``min_images_seen`` times in all, before the cap;
    ``total`` (the configured epochs) when those already do."""
    if min_images_seen <= 0 or images <= 0 or total * images >= min_images_seen:
        return total
    return math.ceil(min_images_seen / images)


def resolve_epochs(
    epochs: int, images: int, min_images_seen: int, fine_tune_epochs: int = 0
) -> tuple[int, int]:
    """``(epochs, fine_tune_epochs)`` that show at least ``min_images_seen`` images in all,
    up to :data:`MAX_EPOCHS_FOR_MIN_IMAGES`.

    A few hundred images pass through a few epochs in a few hundred updates, too few for
    the augmented and inception variants to learn; early stopping still ends a run that has
    stopped improving. The extra epochs are shared between the head and the fine-tuning
    phase in the configured proportion. Large sets are unaffected (5 epochs of 54,000 images
    is 270,000).
    """
    total = epochs + fine_tune_epochs
    wanted = epochs_for_min_images(total, images, min_images_seen)
    if wanted == total:
        return epochs, fine_tune_epochs
    needed = max(total, min(wanted, MAX_EPOCHS_FOR_MIN_IMAGES))
    head = max(1, round(epochs * needed / total))
    return head, needed - head if fine_tune_epochs else 0


def epoch_rule_record(configured: TrainSettings, labelled: int, pretrain_images: int = 0) -> dict:
    """For metrics/train: what the minimum-images rule asked for and whether
    :data:`MAX_EPOCHS_FOR_MIN_IMAGES` cut it, for the target task on ``labelled`` images and
    the source task on ``pretrain_images`` (0: no pretraining); empty when it did not fire."""
    minimum = configured["min_images_seen"]
    phases = [("", configured["epochs"] + configured.get("fine_tune_epochs", 0), labelled)]
    if pretrain_images:
        phases.append(("pretrain_", configured["pretrain_epochs"], pretrain_images))
    record = {}
    for prefix, total, images in phases:
        wanted = epochs_for_min_images(total, images, minimum)
        if wanted != total:
            record[f"{prefix}epochs_for_min_images_seen"] = wanted
            record[f"{prefix}epochs_capped"] = wanted > max(total, MAX_EPOCHS_FOR_MIN_IMAGES)
    return record


def resolve_for_data(settings: TrainSettings, labelled: int, images: int,
                     val_images: int) -> dict[str, Any]:
    """``settings`` with what depends on the data filled in, once it is known: the batch size
    and epochs for ``labelled`` target-task images and, for a pretrained variant, the epochs
    and batch size (``pretrain_batch_size``) of its source task on all ``images``; early
    stopping off (patience 0) on fewer than ``early_stopping_min_val_images`` validation
    images."""
    resolved = dict(settings)
    if val_images < settings.get("early_stopping_min_val_images", 0):
        resolved["early_stopping_patience"] = 0
    min_steps, min_seen = settings["min_steps_per_epoch"], settings["min_images_seen"]
    resolved["batch_size"] = resolve_batch_size(settings["batch_size"], labelled, min_steps)
    resolved["epochs"], fine_tune_epochs = resolve_epochs(
        settings["epochs"], labelled, min_seen, settings.get("fine_tune_epochs", 0)
    )
    if "fine_tune_epochs" in settings:
        resolved["fine_tune_epochs"] = fine_tune_epochs
    if "pretrain_epochs" in settings:
        resolved["pretrain_epochs"] = resolve_epochs(settings["pretrain_epochs"], images, min_seen)[0]
        resolved["pretrain_batch_size"] = resolve_batch_size(settings["batch_size"], images, min_steps)
    return resolved


def balanced_class_weight(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """sklearn's "balanced" weights, n / (k * count): each class weighs as much in the loss."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    found = dict(zip((int(c) for c in present), (float(w) for w in weights), strict=True))
    return {cls: found.get(cls, 1.0) for cls in range(num_classes)}


# The optimizer, schedule and loss settings of a recipe, and what each means when absent:
# constant-rate Adam on the plain cross-entropy, the tutorial's recipe.
PLAIN_RECIPE: dict[str, Any] = {
    "optimizer": "adam",
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "warmup_epochs": 0.0,
    "label_smoothing": 0.0,
}
ONE_CYCLE_START_FRACTION = 0.3  # share of the steps spent climbing to the peak rate
ONE_CYCLE_DIV = 25.0  # the climb starts at peak / 25 (fastai's default)
SGD_MOMENTUM = 0.9


def learning_rate_schedule(learning_rate: float, recipe: Mapping[str, Any], total_steps: int):
    """The rate (a float, or a built-in Keras schedule so the saved model needs no custom
    objects) for ``total_steps`` optimizer steps.

    cosine: a linear warm-up from 0 over ``warmup_epochs`` (as a share of the steps), then a
    cosine decay to 0 by the last step. one_cycle: up from peak/25 over the first 30% of the
    steps, then a cosine decay to about 0, as fastai's fit_one_cycle does.
    """
    import keras

    schedule = recipe.get("lr_schedule", "constant")
    if schedule == "constant":
        return learning_rate
    total_steps = max(1, int(total_steps))
    if schedule == "cosine":
        epochs = max(float(recipe.get("epochs_in_phase", 1)), 1e-9)
        share = min(float(recipe.get("warmup_epochs", 0.0)) / epochs, 1.0)
        warmup = min(int(round(share * total_steps)), total_steps - 1)
        start = 0.0 if warmup else learning_rate
    elif schedule == "one_cycle":
        warmup = min(int(round(ONE_CYCLE_START_FRACTION * total_steps)), total_steps - 1)
        start = learning_rate / ONE_CYCLE_DIV
    else:
        raise TrainingError(f"unknown lr_schedule {schedule!r}")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=start,
        decay_steps=total_steps - warmup,
        alpha=0.0,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(learning_rate, recipe: Mapping[str, Any]):
    import keras

    name = recipe.get("optimizer", "adam")
    decay = float(recipe.get("weight_decay", 0.0)) or None
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=decay)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=decay or 0.0)
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=learning_rate, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=decay
        )
    raise TrainingError(f"unknown optimizer {name!r}")


def one_hot_labels(num_classes: int, label_smoothing: float) -> bool:
    """Whether the labels must be one-hot: Keras' sparse cross-entropy cannot smooth them.
    Two classes train with a sigmoid and binary cross-entropy, which smooths 0/1 labels."""
    return label_smoothing > 0 and num_classes > 2


def make_loss(num_classes: int, label_smoothing: float = 0.0, *, one_hot: bool = False):
    """The head's cross-entropy, smoothed; ``one_hot`` when the labels come one-hot anyway
    (a stream built for a smoothed loss, reused unsmoothed by the learning-rate sweep)."""
    import keras

    from cnnpipe.models import classification_head_loss

    if label_smoothing <= 0 and not (one_hot and num_classes > 2):
        return classification_head_loss(num_classes)
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def compile_model(
    model,
    num_classes: int,
    learning_rate: float,
    recipe: Mapping[str, Any] | None = None,
    *,
    epochs: int = 1,
    steps_per_epoch: int = 1,
    one_hot: bool = False,
) -> None:
    """Compile with the recipe's optimizer, schedule (over ``epochs`` x ``steps_per_epoch``
    steps) and loss; no recipe is :data:`PLAIN_RECIPE`."""
    recipe = {**PLAIN_RECIPE, **(recipe or {}), "epochs_in_phase": epochs}
    rate = learning_rate_schedule(learning_rate, recipe, epochs * steps_per_epoch)
    model.compile(
        optimizer=make_optimizer(rate, recipe),
        loss=make_loss(num_classes, float(recipe["label_smoothing"]), one_hot=one_hot),
        metrics=["accuracy"],
    )


def _steps(dataset) -> int:
    """Batches per epoch, for sizing a schedule; 1 when the dataset cannot tell."""
    count = int(dataset.cardinality())
    return count if count > 0 else 1


def with_one_hot_labels(dataset, num_classes: int):
    """(images, int labels) batches as (images, one-hot float labels); batches whose labels
    are one-hot already (the shard reader can decode them so) pass as they are.

    Prefetched again: without it the conversion runs in the training step's own thread,
    after the reader's prefetch.
    """
    import tensorflow as tf

    from cnnpipe.core.shards import PREFETCH_BATCHES

    if dataset.element_spec[1].shape.rank == 2:
        return dataset
    return dataset.map(
        lambda images, labels: (images, tf.one_hot(labels, num_classes))
    ).prefetch(PREFETCH_BATCHES)


# The resolved train settings of one variant (resolved/train/<variant>.json, "train"):
# epochs, batch_size, learning_rate, early_stopping_patience, shuffle_buffer_mb,
# min_steps_per_epoch, class_weight, and for a
# MobileNet variant pretrain_epochs and the fine_tune_* keys.
TrainSettings = Mapping[str, Any]


def pretrain_backbone(model, train_ds, val_ds, settings: TrainSettings, epochs: int):
    """Fit ``model`` (built with a 4-way head) on the rotation task's batches; returns its
    history."""
    from cnnpipe.train.pretraining import ROTATIONS

    compile_model(
        model, ROTATIONS, settings["learning_rate"], settings,
        epochs=epochs, steps_per_epoch=_steps(train_ds),
    )
    if one_hot_labels(ROTATIONS, settings.get("label_smoothing", 0.0)):
        train_ds = with_one_hot_labels(train_ds, ROTATIONS)
        val_ds = with_one_hot_labels(val_ds, ROTATIONS)
    history = fit_phase(
        model, train_ds, val_ds, epochs, 0, settings["early_stopping_patience"], (),
    )
    check_finite(history, "pretraining", settings["learning_rate"])
    return history


@dataclass
class TrainingResult:
    history: dict[str, list[float]]  # loss, accuracy, val_loss, val_accuracy per epoch
    epochs_run: int
    best_epoch: int  # 1-based epoch whose weights were kept
    train_seconds: float
    images_seen: int
    phases: list[str] = field(default_factory=list)  # "head" / "fine_tune" per epoch

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0


def check_finite(history: dict[str, list[float]], phase: str, learning_rate: float) -> None:
    for key in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(key, []), start=1):
            if not math.isfinite(value):
                raise TrainingError(
                    f"{key} became {value} in epoch {epoch} of the {phase} phase "
                    f"(learning rate {learning_rate:g}); lower the learning rate or check the data"
                )


def nan_guard():
    """Keras' TerminateOnNaN, dispatched off the training thread.

    A callback with a per-batch hook makes Keras run every hook of the fit in the training
    loop itself, reading each step's loss back before the next step is dispatched: the steps
    no longer overlap (measured: 0.82x a plain fit's images/s for simple_cnn and overfit_cnn,
    bench/RESULTS.md). Keras runs callbacks that declare ``async_safe`` in a worker thread;
    this one only reads the loss and sets ``stop_training``, so it is safe there, and a NaN
    still stops the fit within a step or two.
    """
    import keras

    class AsyncTerminateOnNaN(keras.callbacks.TerminateOnNaN):
        async_safe = True

    return AsyncTerminateOnNaN()


def fit_phase(
    model, train_ds, val_ds, epochs, initial_epoch, patience, callbacks, class_weight=None,
    checkpoint=None,
):
    """One ``model.fit`` as every training phase runs it: NaN guard, early stopping on the
    validation loss with the best weights restored, the dataset's own seeded shuffle, and
    BatchNorm on TensorFlow's fused kernel (cnnpipe.train.fused_norm). ``checkpoint`` makes
    the callback that saves each epoch's state from the EarlyStopping one (or None); it runs
    after it, so that it saves this epoch's counters."""
    import keras

    from cnnpipe.train.fused_norm import fused_batch_norm

    stop = [nan_guard()]
    if patience > 0:
        stop.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            )
        )
    if checkpoint is not None:
        stop.append(checkpoint(stop[1] if patience > 0 else None))
    with fused_batch_norm():
        fit = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=initial_epoch + epochs,
            initial_epoch=initial_epoch,
            callbacks=stop + list(callbacks),
            class_weight=class_weight,
            # The dataset shuffles itself (seeded); Keras warns if asked to shuffle tf.data.
            shuffle=False,
            verbose=2,
        )
    # A resumed phase that early stopping had already ended runs no epoch and has no history.
    return {key: [float(v) for v in values] for key, values in fit.history.items()}


def train_model(
    model,
    train_ds,
    val_ds,
    num_classes: int,
    settings: TrainSettings,
    *,
    images_per_epoch: int,
    class_weight: dict[int, float] | None = None,
    callbacks=(),
    fine_tune=None,
    resume=None,
) -> TrainingResult:
    """Train the head (and, with ``fine_tune_epochs`` and the architecture's ``fine_tune``
    split, fine-tune its backbone) in place.

    ``train_ds``/``val_ds`` yield batches of (uint8 images, labels): the model normalizes.
    ``resume`` (a cnnpipe.train.resume.ResumeStore) saves every epoch and goes on from the
    state it holds, skipping completed phases.
    """
    steps_per_epoch = _steps(train_ds)
    if one_hot_labels(num_classes, settings.get("label_smoothing", 0.0)):
        train_ds = with_one_hot_labels(train_ds, num_classes)
        val_ds = with_one_hot_labels(val_ds, num_classes)
    from cnnpipe.train.phases import Phases

    phase = Phases(model, train_ds, val_ds, num_classes, settings, steps_per_epoch,
                    callbacks, class_weight, resume)
    start = time.perf_counter()
    phase.run("head", settings["learning_rate"], settings["epochs"], "training")
    # Only architectures with a fine-tuning split have these keys.
    if settings.get("fine_tune_epochs", 0) > 0:
        from cnnpipe.models.finetune import set_base_trainable

        set_base_trainable(model, settings["fine_tune_layers"], fine_tune,
                           settings.get("fine_tune_batchnorm", "frozen"))
        fine_lr = settings["learning_rate"] * settings["fine_tune_lr_factor"]
        phase.run("fine_tune", fine_lr, settings["fine_tune_epochs"], "fine-tuning")
    seconds = time.perf_counter() - start
    return TrainingResult(
        history=phase.history,
        epochs_run=len(phase.phases),
        best_epoch=kept_epoch(phase.history, phase.phases, settings["early_stopping_patience"]),
        train_seconds=seconds,
        images_seen=len(phase.phases) * images_per_epoch,
        phases=phase.phases,
    )


def kept_epoch(history, phases: list[str], patience: int) -> int:
    """The 1-based epoch whose weights were kept: early stopping restores the best weights
    of the last phase only."""
    if not patience:
        return len(phases)
    last_phase_start = phases.index(phases[-1])
    return last_phase_start + int(np.argmin(history["val_loss"][last_phase_start:])) + 1
