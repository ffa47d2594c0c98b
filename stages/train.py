"""Stage train@<variant>: build the variant, fit it, save model, card and curves.

settings: resolved/train/<variant>.json (seed, the shared train settings with the variant's
overrides, every hyperparameter), written by the params stage
"""

import sys
import tempfile
import time
from pathlib import Path

from cnnpipe.core import layout
from cnnpipe.core.io import read_json, write_csv, write_json
from cnnpipe.core.runner import run
from cnnpipe.core.sampling import labelled_subset
from cnnpipe.core.settings import read_settings
from cnnpipe.core.shards import ShardSet


def main(variant_name: str) -> None:
    config = read_settings(layout.resolved_train(variant_name))
    card = read_json(layout.DATA_CARD)
    preprocessing = read_json(layout.PREPROCESSING)
    train = ShardSet(layout.split_dir("train"))
    val = ShardSet(layout.split_dir("val"))
    raw_shape = tuple(train.image_shape)

    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from cnnpipe.models import build_model, find_backbone
    from cnnpipe.train.curves import curve_rows, plot_training_history
    from cnnpipe.train.environment import describe_environment
    from cnnpipe.train.pretraining import ROTATIONS
    from cnnpipe.train.training import (
        balanced_class_weight,
        builder_arguments,
        count_parameters,
        estimate_flops,
        pretrain_backbone,
        resolve_for_data,
        save_model_files,
        seed_everything,
        train_model,
    )

    seed = config.seed
    seed_everything(seed)
    # Pretraining uses every training image (its task ignores the labels); the target task
    # learns from at most `train_images` labelled ones.
    labelled = labelled_subset(train.labels, config.train.train_images, seed)
    # Settings that depend on the data are resolved here, once it is known, and recorded in
    # the model card with the rest.
    settings = resolve_for_data(config.train.to_dict(), len(labelled), len(train))
    class_weight = (
        balanced_class_weight(train.labels[labelled], card["num_classes"])
        if settings["class_weight"] == "balanced" else None
    )
    hyperparameters = builder_arguments(config.hyperparameters.to_dict(), seed)
    pretraining = {}
    with tempfile.TemporaryDirectory() as scratch:
        if hyperparameters.get("weights") == "pretrain":
            source = build_model(
                config.architecture, raw_shape, ROTATIONS,
                preprocessing=preprocessing,
                **{**hyperparameters, "weights": "none"},
            )
            start = time.perf_counter()
            history = pretrain_backbone(
                source, train, val, settings, settings["pretrain_epochs"], seed
            )
            pretraining = {
                "pretrain_task": "rotation",
                "pretrain_epochs_run": len(history["loss"]),
                "pretrain_val_accuracy": max(history["val_accuracy"]),
                "pretrain_seconds": round(time.perf_counter() - start, 2),
            }
            # Only the backbone carries over; the 4-way rotation head is dropped.
            hyperparameters["weights"] = str(Path(scratch) / "backbone.weights.h5")
            find_backbone(source).save_weights(hyperparameters["weights"])
        model = build_model(
            config.architecture, raw_shape, card["num_classes"],
            preprocessing=preprocessing, **hyperparameters,
        )
    train_ds = train.dataset(
        settings["batch_size"], shuffle=True, seed=seed,
        shuffle_buffer_mb=settings["shuffle_buffer_mb"], subset=labelled,
    )
    val_ds = val.dataset(settings["batch_size"])
    # dvcyaml=False: dvc.yaml declares the plots itself; a stage must not rewrite it.
    with Live(str(layout.live_dir(variant_name)), dvcyaml=False, save_dvc_exp=False) as live:
        result = train_model(
            model, train_ds, val_ds, card["num_classes"], settings,
            images_per_epoch=len(labelled), class_weight=class_weight,
            callbacks=[DVCLiveCallback(live=live)],
        )

    save_model_files(model, layout.model_file(variant_name), layout.weights_file(variant_name))
    # What anything that uses the model later needs: evaluate and predict load model.keras
    # and take the rest from here, never from code that may have changed since training.
    write_json(layout.model_card(variant_name), {
        "variant": variant_name,
        "architecture": config.architecture,
        "class_names": card["class_names"],
        "num_classes": card["num_classes"],
        "raw_image_shape": list(raw_shape),
        "image_loading": card.get("image_loading"),
        "preprocessing": preprocessing,
        "config": {**config.to_dict(), "train": settings},
    })
    total, trainable = count_parameters(model)
    write_json(layout.train_metrics(variant_name), {
        "train_images": len(labelled),
        "batch_size": settings["batch_size"],
        "epochs": settings["epochs"],
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_loss": min(result.history["val_loss"]),
        "total_params": total,
        "trainable_params": trainable,
        "flops_per_image": estimate_flops(model),
        "train_seconds": round(result.train_seconds, 2),
        "train_images_per_second": round(result.images_per_second, 1),
        **pretraining,
        "environment": describe_environment(),
    })
    for metric in ("accuracy", "loss"):
        write_csv(layout.curve_table(metric, variant_name), curve_rows(result.history, metric))
    fine_tune_start = result.phases.index("fine_tune") + 1 if "fine_tune" in result.phases else 0
    plot_training_history(
        result.history, layout.image_dir(variant_name) / "training_curves.png",
        title=variant_name, fine_tune_start=fine_tune_start,
    )
    print(f"{variant_name}: {result.epochs_run} epochs, best epoch {result.best_epoch}, "
          f"{result.train_seconds:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/train.py VARIANT")
    run(main, sys.argv[1])
