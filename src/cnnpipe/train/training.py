"""Seeding, the batch size and class weights a data set gets, and fitting a built model."""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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


def resolve_epochs(
    epochs: int, images: int, min_images_seen: int, fine_tune_epochs: int = 0
) -> tuple[int, int]:
    """``(epochs, fine_tune_epochs)`` that show at least ``min_images_seen`` images in all.

    A few hundred images pass through a few epochs in a few hundred updates, too few for
    the augmented and inception variants to learn; early stopping still ends a run that has
    stopped improving. The extra epochs are shared between the head and the fine-tuning
    phase in the configured proportion. Large sets are unaffected (5 epochs of 54,000 images
    is 270,000).
    """
    total = epochs + fine_tune_epochs
    if min_images_seen <= 0 or images <= 0 or total * images >= min_images_seen:
        return epochs, fine_tune_epochs
    needed = math.ceil(min_images_seen / images)
    head = max(1, round(epochs * needed / total))
    return head, needed - head if fine_tune_epochs else 0


def resolve_for_data(settings: TrainSettings, labelled: int, images: int) -> dict[str, Any]:
    """``settings`` with what depends on the data filled in, once it is known: the batch size
    and epochs for ``labelled`` target-task images and, for a pretrained variant, the epochs
    and batch size (``pretrain_batch_size``) of its source task on all ``images``."""
    resolved = dict(settings)
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


def builder_arguments(
    hyperparameters: Mapping[str, Any], seed: int, *, weights: str | None = None
) -> dict[str, Any]:
    """The builder's keyword arguments for a variant's resolved ``hyperparameters``: its
    augmentation seeded with the run's seed, so a rerun augments identically, and, when
    given, ``weights`` in place of the configured ones (a MobileNet variant's only)."""
    arguments = dict(hyperparameters)
    if arguments.get("augmentation"):
        arguments["augmentation"] = {"seed": seed, **arguments["augmentation"]}
    if weights is not None and "weights" in arguments:
        arguments["weights"] = weights
    return arguments


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


def make_loss(num_classes: int, label_smoothing: float = 0.0):
    import keras

    from cnnpipe.models import classification_head_loss

    if label_smoothing <= 0:
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
) -> None:
    """Compile with the recipe's optimizer, schedule (over ``epochs`` x ``steps_per_epoch``
    steps) and loss; no recipe is :data:`PLAIN_RECIPE`."""
    recipe = {**PLAIN_RECIPE, **(recipe or {}), "epochs_in_phase": epochs}
    rate = learning_rate_schedule(learning_rate, recipe, epochs * steps_per_epoch)
    model.compile(
        optimizer=make_optimizer(rate, recipe),
        loss=make_loss(num_classes, float(recipe["label_smoothing"])),
        metrics=["accuracy"],
    )


def _steps(dataset) -> int:
    """Batches per epoch, for sizing a schedule; 1 when the dataset cannot tell."""
    count = int(dataset.cardinality())
    return count if count > 0 else 1


def with_one_hot_labels(dataset, num_classes: int):
    """(images, int labels) batches as (images, one-hot float labels).

    Prefetched again: without it the conversion runs in the training step's own thread,
    after the reader's prefetch.
    """
    import tensorflow as tf

    from cnnpipe.core.shards import PREFETCH_BATCHES

    return dataset.map(
        lambda images, labels: (images, tf.one_hot(labels, num_classes))
    ).prefetch(PREFETCH_BATCHES)


# The resolved train settings of one variant (resolved/train/<variant>.json, "train"):
# epochs, batch_size, learning_rate, early_stopping_patience, shuffle_buffer_mb,
# min_steps_per_epoch, class_weight, and for a
# MobileNet variant pretrain_epochs and the fine_tune_* keys.
TrainSettings = Mapping[str, Any]


def pretrain_backbone(
    model, train_shards, val_shards, settings: TrainSettings, epochs: int, seed: int
) -> dict[str, list[float]]:
    """Fit ``model`` (built with a 4-way head) on the rotation task; returns its history."""
    from cnnpipe.train.pretraining import ROTATIONS, rotation_dataset

    batch_size = settings["pretrain_batch_size"]
    train_ds = rotation_dataset(
        train_shards, batch_size, seed, shuffle=True,
        shuffle_buffer_mb=settings["shuffle_buffer_mb"],
    )
    val_ds = rotation_dataset(
        val_shards, batch_size, seed + 1, shuffle=False,
        shuffle_buffer_mb=settings["shuffle_buffer_mb"],
    )
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
    _check_finite(history, "pretraining", settings["learning_rate"])
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


def _check_finite(history: dict[str, list[float]], phase: str, learning_rate: float) -> None:
    for key in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(key, []), start=1):
            if not math.isfinite(value):
                raise TrainingError(
                    f"{key} became {value} in epoch {epoch} of the {phase} phase "
                    f"(learning rate {learning_rate:g}); lower the learning rate or check the data"
                )


def fit_phase(
    model, train_ds, val_ds, epochs, initial_epoch, patience, callbacks, class_weight=None
):
    """One ``model.fit`` as every training phase runs it: NaN guard, early stopping on the
    validation loss with the best weights restored, the dataset's own seeded shuffle, and
    BatchNorm on TensorFlow's fused kernel (cnnpipe.train.fused_norm)."""
    import keras

    from cnnpipe.train.fused_norm import fused_batch_norm

    stop = [keras.callbacks.TerminateOnNaN()]
    if patience > 0:
        stop.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            )
        )
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
) -> TrainingResult:
    """Train the head (and, if configured, fine-tune a pretrained backbone) in place.

    ``train_ds``/``val_ds`` yield batches of (uint8 images, labels): the model normalizes.
    """
    steps_per_epoch = _steps(train_ds)
    if one_hot_labels(num_classes, settings.get("label_smoothing", 0.0)):
        train_ds = with_one_hot_labels(train_ds, num_classes)
        val_ds = with_one_hot_labels(val_ds, num_classes)
    compile_model(
        model, num_classes, settings["learning_rate"], settings,
        epochs=settings["epochs"], steps_per_epoch=steps_per_epoch,
    )
    start = time.perf_counter()
    history = fit_phase(
        model, train_ds, val_ds, settings["epochs"], 0, settings["early_stopping_patience"],
        callbacks, class_weight,
    )
    _check_finite(history, "training", settings["learning_rate"])
    phases = ["head"] * len(history["loss"])

    # Only MobileNet variants have these keys; other variants train in one phase.
    fine_tune_epochs = settings.get("fine_tune_epochs", 0)
    if fine_tune_epochs > 0:
        from cnnpipe.models import set_base_trainable

        set_base_trainable(model, settings["fine_tune_layers"])
        fine_lr = settings["learning_rate"] * settings["fine_tune_lr_factor"]
        # Recompiling makes the unfreeze take effect; the schedule restarts for this phase.
        compile_model(
            model, num_classes, fine_lr, settings,
            epochs=fine_tune_epochs, steps_per_epoch=steps_per_epoch,
        )
        fine = fit_phase(
            model, train_ds, val_ds, fine_tune_epochs, len(phases),
            settings["early_stopping_patience"], callbacks, class_weight,
        )
        _check_finite(fine, "fine-tuning", fine_lr)
        for key, values in fine.items():
            history.setdefault(key, []).extend(values)
        phases += ["fine_tune"] * len(fine["loss"])
    seconds = time.perf_counter() - start

    # Early stopping restores the best weights of the last phase only.
    last_phase_start = phases.index(phases[-1])
    best_epoch = len(phases)
    if settings["early_stopping_patience"]:
        best_epoch = last_phase_start + int(np.argmin(history["val_loss"][last_phase_start:])) + 1
    return TrainingResult(
        history=history,
        epochs_run=len(phases),
        best_epoch=best_epoch,
        train_seconds=seconds,
        images_seen=len(phases) * images_per_epoch,
        phases=phases,
    )


def count_parameters(model) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = trainable + sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return total, trainable


def estimate_flops(model) -> int:
    """Multiply-adds x 2 of the conv and dense layers for one image (the bulk of the work).

    Counted from layer shapes, so it is exact for those layers and ignores the cheap ones
    (BatchNorm, pooling, activations); nested models such as the MobileNetV2 base are included.
    """
    import keras

    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            flops += estimate_flops(layer)
            continue
        if not layer.weights:
            continue
        out_shape = layer.output.shape
        kernel = layer.weights[0].shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            flops += 2 * int(np.prod(out_shape[1:])) * kernel[0] * kernel[1]
        elif isinstance(layer, keras.layers.Conv2D):
            flops += 2 * int(np.prod(out_shape[1:])) * kernel[0] * kernel[1] * kernel[2]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * kernel[0] * kernel[1]
    return int(flops)


def save_model_files(model, keras_path: str | Path, weights_path: str | Path) -> None:
    """Save the model whole (``.keras``) and its weights, both byte-identical for identical
    weights.

    Keras stamps each save with things that change from run to run: the save time (in the
    metadata and as the weights entry's zip date) and the memory addresses of shared objects
    (``shared_object_id`` in the config). DVC would take every save for a new model and
    re-run every stage that loads it. The times are dropped and the addresses numbered in
    order of appearance, which is all the loader needs: it only matches equal ids.
    """
    from cnnpipe.core.io import atomic_path

    with atomic_path(weights_path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    with atomic_path(keras_path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as archive:
            entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, content in entries:
                if name == "metadata.json":
                    metadata = json.loads(content)
                    metadata.pop("date_saved", None)
                    content = json.dumps(metadata, sort_keys=True).encode()
                elif name == "config.json":
                    content = json.dumps(_numbered_shared_objects(json.loads(content))).encode()
                archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content)


def _numbered_shared_objects(config):
    numbers: dict[int, int] = {}

    def renumber(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "shared_object_id":
                    node[key] = numbers.setdefault(value, len(numbers) + 1)
                else:
                    renumber(value)
        elif isinstance(node, list):
            for item in node:
                renumber(item)

    renumber(config)
    return config
