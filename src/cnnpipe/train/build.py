"""The one build path: from a variant's resolved settings and the prepared data to a model
ready to train (:func:`build_variant`), and its training (:func:`train_variant`).

The train stage, ``cnnpipe lr-find`` and every bench script go through here; no other code
strings together the labelled subset, the data-dependent settings, the initial weights, the
model and its input stream (tests/test_build_path.py scans for that). The plan records what
actually trains (:class:`~cnnpipe.core.model_card.TrainedAs`), which the model card and
metrics/train then hold.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnpipe.core import layout
from cnnpipe.core.io import read_json
from cnnpipe.core.model_card import TrainedAs
from cnnpipe.core.sampling import labelled_subset
from cnnpipe.core.shards import ShardSet
from cnnpipe.models import get_architecture
from cnnpipe.train.distribute import DEFAULT, MULTI_WORKER, Distribution


@dataclass(frozen=True)
class TrainingData:
    """The prepared splits a variant trains and validates on, with their data card and the
    preprocess stage's settings (which the model applies itself)."""

    train: ShardSet
    val: ShardSet
    card: Mapping[str, Any]
    preprocessing: Mapping[str, Any]

    @classmethod
    def open(cls) -> TrainingData:
        return cls(
            train=ShardSet(layout.split_dir("train")),
            val=ShardSet(layout.split_dir("val")),
            card=read_json(layout.DATA_CARD),
            preprocessing=read_json(layout.PREPROCESSING),
        )

    @property
    def num_classes(self) -> int:
        return self.card["num_classes"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.image_shape)


def smaller_data(data: TrainingData, images: int, seed: int, directory: Path) -> TrainingData:
    """``data`` with a training split of ``images`` records, drawn as ``train_images`` draws
    them and written to shards of their own under ``directory``: a data set of that size, as
    a user with that many images has (benches time the stage at such sizes)."""
    from cnnpipe.core.shards import write_arrays

    picked = labelled_subset(data.train.labels, images, seed)
    train = write_arrays(Path(directory) / "train", data.train.read(picked), data.train.labels[picked])
    return TrainingData(train=train, val=data.val, card=data.card, preprocessing=data.preprocessing)


@dataclass
class TrainingPlan:
    """A built variant, ready for :func:`train_variant`."""

    variant: str
    config: Mapping[str, Any]  # resolved/train/<variant>.json
    settings: dict[str, Any]  # the train settings after resolve_for_data
    trained_as: TrainedAs
    model: Any  # keras.Model, initial weights in place
    train_ds: Any  # tf.data batches of (uint8 images, labels)
    val_ds: Any
    data: TrainingData
    labelled: np.ndarray  # indices of the training records the target task learns from
    class_weight: dict[int, float] | None = None
    pretraining: dict[str, Any] = field(default_factory=dict)
    distribution: Distribution = field(default_factory=Distribution)

    @property
    def architecture(self):
        return get_architecture(self.config["architecture"])


def training_batches(shards: ShardSet, batch_size: int, seed: int, *, shuffle_buffer_mb: int,
                     subset=None, with_index: bool = False, one_hot: int | None = None):
    """The stream a variant trains on: seeded shuffle, every epoch in a new order."""
    return shards.dataset(batch_size, shuffle=True, seed=seed, shuffle_buffer_mb=shuffle_buffer_mb,
                          subset=subset, with_index=with_index, one_hot=one_hot)


def label_depth(num_classes: int, settings) -> int | None:
    """The one-hot width the labels need (label smoothing needs one-hot targets), or None."""
    from cnnpipe.train.training import one_hot_labels

    smoothing = settings.get("label_smoothing", 0.0)
    return num_classes if one_hot_labels(num_classes, smoothing) else None


def build_network(config: Mapping[str, Any], input_shape, num_classes: int, preprocessing=None,
                  backbone_weights=None):
    """The variant's network alone, at any input shape (benches build it at synthetic ones).
    Its augmentation is seeded with the run's seed, so a rerun augments identically."""
    from cnnpipe.models.skeleton import build_model

    return build_model(
        config["architecture"], tuple(input_shape), num_classes, preprocessing=preprocessing,
        augmentation_seed=config["seed"], backbone_weights=backbone_weights,
        **config["hyperparameters"],
    )


def build_variant(config: Mapping[str, Any], data: TrainingData, *, pretrain: bool = True,
                  variant: str | None = None, distribute: bool = True) -> TrainingPlan:
    """Start the variant's strategy (one process alone unless ``distribute``, as the
    learning-rate sweep wants), seed, pick the labelled images, resolve what depends on the
    data, set the initial weights (``weights: pretrain`` runs its source task here unless
    ``pretrain`` is False), build the model and its input streams."""
    from cnnpipe.train.distribute import start_distribution
    from cnnpipe.train.training import balanced_class_weight, resolve_for_data, seed_everything

    config = _plain(config)
    seed = config["seed"]
    train = config["train"] if distribute else {**config["train"], "strategy": DEFAULT}
    distribution = start_distribution(train)  # before any op: it configures the runtime
    seed_everything(seed)
    labelled = labelled_subset(data.train.labels, config["train"]["train_images"], seed)
    settings = resolve_for_data(config["train"], len(labelled), len(data.train),
                                len(data.val))
    settings["batch_size"] = distribution.global_batch(settings["batch_size"])
    class_weight = (
        balanced_class_weight(data.train.labels[labelled], data.num_classes)
        if settings["class_weight"] == "balanced" else None
    )
    depth = label_depth(data.num_classes, settings)
    with tempfile.TemporaryDirectory() as scratch, distribution.scope():
        backbone_weights, pretraining = init_weights(
            config, data, settings, Path(scratch), pretrain=pretrain
        )
        model = build_network(config, data.image_shape, data.num_classes, data.preprocessing,
                              backbone_weights)
    return TrainingPlan(
        variant=variant or config.get("variant", config["architecture"]),
        config=config,
        settings=settings,
        trained_as=trained_as(settings, len(labelled), bool(pretraining), distribution),
        model=model,
        train_ds=training_batches(data.train, settings["batch_size"], seed,
                                  shuffle_buffer_mb=settings["shuffle_buffer_mb"],
                                  subset=labelled, one_hot=depth),
        val_ds=data.val.dataset(settings["batch_size"], one_hot=depth),
        data=data,
        labelled=labelled,
        class_weight=class_weight,
        pretraining=pretraining,
        distribution=distribution,
    )


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    to_dict = getattr(config, "to_dict", None)
    return to_dict() if to_dict else dict(config)


def trained_as(settings: Mapping[str, Any], labelled: int, pretrained: bool,
               distribution: Distribution | None = None) -> TrainedAs:
    return TrainedAs(
        **(distribution or Distribution()).record(),
        train_images=labelled,
        batch_size=settings["batch_size"],
        epochs=settings["epochs"],
        fine_tune_epochs=settings.get("fine_tune_epochs", 0),
        pretrain_epochs=settings["pretrain_epochs"] if pretrained else 0,
        pretrain_batch_size=settings["pretrain_batch_size"] if pretrained else None,
        early_stopping_patience=settings["early_stopping_patience"],
    )


def init_weights(config, data: TrainingData, settings, scratch: Path, *, pretrain: bool = True):
    """``(backbone_weights, pretraining record)`` for the variant's ``weights`` setting: the
    one reader of it. none: random; imagenet: Keras' download; a file: loaded; pretrain: the
    rotation task on every training image first, its backbone handed on (its head dropped)."""
    weights = config["hyperparameters"].get("weights", "none")
    if weights == "none" or (weights == "pretrain" and not pretrain):
        return None, {}
    if weights == "imagenet":
        return "imagenet", {}
    if weights != "pretrain":
        return Path(weights), {}
    return _pretrained_backbone(config, data, settings, scratch)


def _pretrained_backbone(config, data: TrainingData, settings, scratch: Path):
    from cnnpipe.models.finetune import find_backbone
    from cnnpipe.train.pretraining import ROTATIONS, pretraining_record
    from cnnpipe.train.training import pretrain_backbone

    source = build_network(config, data.image_shape, ROTATIONS, data.preprocessing)
    start = time.perf_counter()
    train_ds, val_ds = _rotation_streams(data, settings, config["seed"])
    history = pretrain_backbone(source, train_ds, val_ds, settings, settings["pretrain_epochs"])
    record = {
        "pretrain_task": "rotation",
        "pretrain_epochs_run": len(history["loss"]),
        **pretraining_record(max(history["val_accuracy"])),
        "pretrain_seconds": round(time.perf_counter() - start, 2),
    }
    path = scratch / "backbone.weights.h5"
    split = get_architecture(config["architecture"]).fine_tune
    find_backbone(source, split.backbone).save_weights(path)
    return path, record


def _rotation_streams(data: TrainingData, settings, seed: int):
    """The rotation task's training and validation batches: every training image, shuffled;
    the validation images in order, with turns of their own seed."""
    from cnnpipe.train.pretraining import rotation_dataset

    batch_size, buffer_mb = settings["pretrain_batch_size"], settings["shuffle_buffer_mb"]
    train = training_batches(data.train, batch_size, seed, shuffle_buffer_mb=buffer_mb,
                             with_index=True)
    val = data.val.dataset(batch_size, with_index=True)
    return rotation_dataset(train, data.train, seed), rotation_dataset(val, data.val, seed + 1)


def train_variant(plan: TrainingPlan, callbacks=(), resume=None):
    """Train the plan's model in place (the head, then any fine-tuning of its backbone).

    ``default`` and ``mirrored`` train with Keras' ``fit``, as every committed model did:
    moving them to the project's own step would change their weights. ``multi_worker`` runs
    that step (cnnpipe.train.worker_loop), since ``fit`` fails under it. ``resume`` (a
    cnnpipe.train.resume.ResumeStore) saves each epoch and resumes with ``fit``; resuming
    the multi-worker step waits for a later issue.
    """
    from cnnpipe.train.training import train_model

    if plan.distribution.name == MULTI_WORKER:
        from cnnpipe.train.worker_loop import train_across_workers

        return train_across_workers(plan, callbacks)
    with plan.distribution.scope():
        return train_model(
            plan.model, plan.train_ds, plan.val_ds, plan.data.num_classes, plan.settings,
            images_per_epoch=len(plan.labelled), class_weight=plan.class_weight,
            callbacks=callbacks, fine_tune=plan.architecture.fine_tune, resume=resume,
        )
