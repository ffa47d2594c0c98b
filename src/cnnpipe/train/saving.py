"""What the train stage writes: the model (whole and as weights), its card, its metrics and
its curves. Saves are byte-identical for identical weights, so DVC sees an unchanged model
as unchanged."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from cnnpipe.core import layout
from cnnpipe.core.io import write_csv, write_json
from cnnpipe.core.model_card import ModelCard


def save_trained(plan, result) -> None:
    """Everything train@<variant> outputs, from its plan and its training result; on a
    worker other than the chief, nothing (:func:`save_worker_copy`)."""
    from cnnpipe.train.curves import curve_rows, plot_training_history

    if not plan.distribution.is_chief:
        save_worker_copy(plan.model)
        return
    variant = plan.variant
    save_model_files(plan.model, layout.model_file(variant), layout.weights_file(variant))
    model_card(plan).write(layout.model_card(variant))
    write_json(layout.train_metrics(variant), train_record(plan, result))
    for metric in ("accuracy", "loss"):
        write_csv(layout.curve_table(metric, variant), curve_rows(result.history, metric))
    phases = result.phases
    fine_tune_start = phases.index("fine_tune") + 1 if "fine_tune" in phases else 0
    plot_training_history(
        result.history, layout.image_dir(variant) / "training_curves.png",
        title=variant, fine_tune_start=fine_tune_start,
    )


def save_worker_copy(model) -> None:
    """A worker other than the chief saves as the chief does, since a save under
    MultiWorkerMirroredStrategy may need every worker (TensorFlow's multi-worker guide saves
    on all of them), but into a temporary folder outside the repository, removed at once:
    nothing DVC could take for an output."""
    with tempfile.TemporaryDirectory(prefix="cnnpipe-worker-") as scratch:
        save_model_files(model, Path(scratch) / layout.MODEL_FILE,
                         Path(scratch) / layout.WEIGHTS_FILE)


def model_card(plan) -> ModelCard:
    """What anything that uses the model later needs: evaluate, predict, export and serving
    load model.keras and take the rest from here, never from code that may have changed."""
    card = plan.data.card
    return ModelCard(
        variant=plan.variant,
        architecture=plan.config["architecture"],
        class_names=tuple(card["class_names"]),
        raw_image_shape=plan.data.image_shape,
        image_loading=card.get("image_loading"),
        preprocessing=dict(plan.data.preprocessing),
        config={**plan.config, "train": plan.settings},
        trained_as=plan.trained_as,
    )


def train_record(plan, result) -> dict:
    from cnnpipe.train.environment import describe_environment
    from cnnpipe.train.training import epoch_rule_record

    total, trainable = count_parameters(plan.model)
    pretrain_images = len(plan.data.train) if plan.pretraining else 0
    return {
        **plan.trained_as.model_dump(mode="json"),
        # Early stopping picked the epoch on these: evaluate names a split too small to.
        "val_images": len(plan.data.val),
        **epoch_rule_record(plan.config["train"], len(plan.labelled), pretrain_images),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_loss": min(result.history["val_loss"]),
        "total_params": total,
        "trainable_params": trainable,
        "flops_per_image": estimate_flops(plan.model),
        "train_seconds": round(result.train_seconds, 2),
        "train_images_per_second": round(result.images_per_second, 1),
        **plan.pretraining,
        "environment": describe_environment(),
    }


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
