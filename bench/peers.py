"""The train stage's own training path against a plain Keras ``model.fit``, per variant.

    python bench/peers.py [--variants simple_cnn,regularized_cnn] [--images N]
                          [--repeats 3] [--torch]

Run after `dvc repro preprocess`. Each measurement is one fresh process (op determinism is
process-wide and cannot be switched off again), interleaved stage / plain / stage / ...:

- stage: what train@<variant> runs: seeded, deterministic ops, the shard reader with its
  shuffle buffer, early stopping, NaN guard, ``verbose=2``, validation on the prepared val split.
- plain: the same model (same builder, same settings, the model normalizing inside), fed by
  a tf.data pipeline written here from the raw arrays (``from_tensor_slices``, a full
  shuffle, ``prefetch(AUTOTUNE)``), no op determinism, no callbacks, the same validation data
  and thread settings.

One epoch over the images the variant's stage trains on (all 54,000, or the MobileNet pair's
10,000-image ``train_images`` subset, picked as the stage picks it), or a data set of
``--images`` images (class-proportional, as ``train_images`` picks, written to shards of their
own: the stage's reader then streams that many records, as it would for a folder that size):
fewer make a quicker run, but each epoch's fixed costs (the shuffle buffer filling before the
first step, validation, epoch-end callbacks) then weigh more than in the stage. The epoch runs
after two warm-up batches (tracing) and is timed from the
epoch's start to its end (validation and every callback's epoch-end work included) by a
callback that runs last. Timing the whole ``fit`` call instead adds a stall that is no part of
training: tearing down a tf.data iterator waits for tf.data's autotuning thread, which wakes
after 10, 20, 40, ... ms, so a 4-second epoch often read 5.12 s and a 6-second one 10.24 s,
on either side at random (bench/RESULTS.md). Printed per
variant: the median images/s of each side and their ratio (stage / plain), the forward FLOPs
per image (conv and dense layers), and the share of this machine's fp32 matmul peak that
training achieves (3x the forward FLOPs per image: forward, and two for the backward pass),
the peak measured here with a 4096x4096 ``tf.matmul``. ``--torch`` adds PyTorch eager on the
tutorial's simple CNN (same widths, same raw arrays), when torch is installed
(`pip install -e '.[bench]'`).

Numbers swing +-40% between runs on shared 2-core machines: compare within one run.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import tempfile
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _setup(variant: str, images: int):
    """The variant built as train@<variant> builds it (cnnpipe.train.build), for one epoch
    on ``images`` labelled images (0: what the stage itself trains on), random weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnpipe.core import layout
    from cnnpipe.params import load_params
    from cnnpipe.params.resolve import train_config
    from cnnpipe.train.build import TrainingData, build_variant, smaller_data

    config = train_config(load_params(layout.PARAMS), variant)
    data = TrainingData.open()
    if images > 0:  # a data set of that many images, as a user with that many has
        scratch = tempfile.mkdtemp(prefix="peers-")
        atexit.register(shutil.rmtree, scratch, True)
        data = smaller_data(data, images, config["seed"], Path(scratch))
        config["train"]["train_images"] = 0
    # One epoch, no pretraining or fine-tuning phase: the comparison is of one fit call.
    config["train"].update(epochs=1, fine_tune_epochs=0, min_images_seen=0)
    # Random weights: the timed fit costs the same, and no source task runs first.
    return build_variant(config, data, pretrain=False, variant=variant)


def _epoch_timer():
    """A callback that records the seconds of each epoch, validation included."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def measure_stage(variant: str, images: int) -> dict:
    plan = _setup(variant, images)
    from cnnpipe.train.saving import estimate_flops
    from cnnpipe.train.training import (
        compile_model,
        fit_phase,
        one_hot_labels,
        with_one_hot_labels,
    )

    settings, classes = plan.settings, plan.data.num_classes
    train_ds, val_ds = plan.train_ds, plan.val_ds
    if one_hot_labels(classes, settings["label_smoothing"]):  # as train_model does
        train_ds = with_one_hot_labels(train_ds, classes)
        val_ds = with_one_hot_labels(val_ds, classes)
    compile_model(plan.model, classes, settings["learning_rate"], settings,
                  epochs=1, steps_per_epoch=len(train_ds))
    patience = settings["early_stopping_patience"]
    # The stage's own fit (callbacks, verbose=2); two batches first for the tracing.
    fit_phase(plan.model, train_ds.take(2), val_ds.take(1), 1, 0, patience, ())
    timer = _epoch_timer()
    fit_phase(plan.model, train_ds, val_ds, 1, 0, patience, [timer])
    return {"images_per_second": len(plan.labelled) / timer.seconds[0],
            "flops_per_image": estimate_flops(plan.model)}


def measure_plain(variant: str, images: int) -> dict:
    plan = _setup(variant, images)
    import tensorflow as tf

    from cnnpipe.train.training import compile_model, one_hot_labels

    settings, classes = plan.settings, plan.data.num_classes
    train, val = plan.data.train, plan.data.val
    x, y = train.read(plan.labelled), train.labels[plan.labelled]
    x_val, y_val = val.read(range(len(val))), val.labels
    if one_hot_labels(classes, settings["label_smoothing"]):
        # Keras smooths only one-hot targets.
        y, y_val = (tf.one_hot(labels, classes).numpy() for labels in (y, y_val))
    batch = settings["batch_size"]
    train_ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y))
                .batch(batch).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(batch)
    compile_model(plan.model, classes, settings["learning_rate"], settings,
                  epochs=1, steps_per_epoch=len(train_ds))
    plan.model.fit(train_ds.take(2), validation_data=val_ds.take(1), epochs=1, verbose=0)
    timer = _epoch_timer()
    plan.model.fit(train_ds, validation_data=val_ds, epochs=1, verbose=0, callbacks=[timer])
    return {"images_per_second": len(y) / timer.seconds[0]}


def measure_torch(variant: str, images: int) -> dict:
    """The tutorial's simple CNN in PyTorch eager: conv-pool-conv-pool-conv, dense, softmax."""
    plan = _setup(variant, images)
    config, settings, train, subset = plan.config, plan.settings, plan.data.train, plan.labelled
    hyperparameters, card = config["hyperparameters"], plan.data.card
    import numpy as np
    import torch
    from torch import nn

    if config["architecture"] != "simple_cnn":
        raise SystemExit("--torch compares the simple_cnn architecture only")
    torch.manual_seed(config["seed"])
    height, width, channels = train.image_shape
    filters, dense, kernel = hyperparameters["filters"], hyperparameters["dense_units"], 3
    layers, size = [], (height, width)
    previous = channels
    for index, width_out in enumerate(filters):
        layers += [nn.Conv2d(previous, width_out, kernel), nn.ReLU()]
        size = (size[0] - kernel + 1, size[1] - kernel + 1)
        if index < len(filters) - 1:
            layers.append(nn.MaxPool2d(2))
            size = (size[0] // 2, size[1] // 2)
        previous = width_out
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(previous * size[0] * size[1], dense),
                          nn.ReLU(), nn.Linear(dense, card["num_classes"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["learning_rate"])
    x = torch.from_numpy(train.read(subset).astype(np.float32) / 255).permute(0, 3, 1, 2)
    y = torch.from_numpy(train.labels[subset].astype(np.int64))
    batch = settings["batch_size"]
    loss_fn = nn.CrossEntropyLoss()

    def epoch(limit=None):
        order = torch.randperm(len(y))
        for step, start in enumerate(range(0, len(y), batch)):
            if limit is not None and step >= limit:
                return
            index = order[start:start + batch]
            optimizer.zero_grad()
            loss_fn(model(x[index]), y[index]).backward()
            optimizer.step()

    epoch(limit=2)
    start = time.perf_counter()
    epoch()
    return {"images_per_second": len(y) / (time.perf_counter() - start)}


def matmul_peak_gflops(size: int = 4096, repeats: int = 5) -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


SIDES = {"stage": measure_stage, "plain": measure_plain, "torch": measure_torch}


def run_side(side: str, variant: str, images: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, __file__, "--one", side, "--variants", variant, "--images", str(images)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        sys.exit(f"{side} {variant} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="", help="comma-separated; default: every variant")
    parser.add_argument("--images", type=int, default=0,
                        help="training images per epoch; 0 (default): what the variant's stage "
                             "trains on (all 54,000, or its train_images subset)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch", action="store_true", help="add PyTorch eager (simple_cnn)")
    parser.add_argument("--one", choices=sorted(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(SIDES[args.one](args.variants, args.images)), flush=True)
        return

    sys.path.insert(0, str(REPO / "src"))
    from cnnpipe.params import load_params

    os.chdir(REPO)
    variants = [v for v in args.variants.split(",") if v] or list(load_params("params.yaml").models)
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak here: {peak:.0f} GFLOP/s (4096x4096 tf.matmul, best of 5)")
    print(f"{'variant':20s} {'stage img/s':>12s} {'plain img/s':>12s} {'ratio':>6s} "
          f"{'MFLOP/img':>10s} {'% of peak':>9s}" + ("  torch img/s" if args.torch else ""))
    for variant in variants:
        sides = ["stage", "plain"] + (["torch"] if args.torch and variant == "simple_cnn" else [])
        rates = {side: [] for side in sides}
        flops = 0
        for _ in range(args.repeats):
            for side in sides:
                measured = run_side(side, variant, args.images)
                rates[side].append(measured["images_per_second"])
                flops = measured.get("flops_per_image", flops)
        median = {side: statistics.median(values) for side, values in rates.items()}
        share = 3 * flops * median["stage"] / (peak * 1e9)
        runs = "; ".join(f"{side} " + "/".join(f"{v:.0f}" for v in values)
                         for side, values in rates.items())
        torch_column = f"  {median['torch']:>11.0f}" if "torch" in median else ""
        print(f"{variant:20s} {median['stage']:>12.0f} {median['plain']:>12.0f} "
              f"{median['stage'] / median['plain']:>6.3f} {flops / 1e6:>10.1f} "
              f"{100 * share:>8.1f}%{torch_column}   ({runs})", flush=True)


if __name__ == "__main__":
    main()
