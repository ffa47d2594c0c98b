"""Training throughput of this checkout's input path against another checkout's, interleaved.

    python bench/input_path.py --old PATH [--variants simple_cnn,regularized_cnn]
                               [--repeats 3] [--images 20000]
    python bench/input_path.py --in-process [--repeats 3]
    python bench/input_path.py --reader-cost [--repeats 3]

Runs ``bench/variant_cost.py`` (one epoch per variant, the checkout's own data path and
models) alternately in the old checkout and in this one, ``--repeats`` times, and prints
each run's images/s, the medians and their ratio (new / old). Interleaving spreads the
machine's drift (+-40% on shared 2-core machines) over both sides. Each checkout needs its
own prepared data first (`dvc repro preprocess` in it): the formats differ between commits.

``--in-process`` instead alternates two inputs in one process, on the same simple_cnn and
the same prepared Fashion-MNIST training split: the shard reader as the train stage uses it,
and the same uint8 images held in memory (``from_tensor_slices``, a full shuffle), which is
what the old path fed (as float32).

``--reader-cost`` times the inputs alone, without a model: the CPU microseconds per image of
one pass (every training image, a 10,000-image subset as the MobileNet pair reads, and the
same images from memory), and the wall time of Keras' ``predict`` over the test split on a
small model with tf.data's autotuning off (as the reader sets it) and on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def images_per_second(checkout: Path, variant: str, images: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "bench/variant_cost.py", "--images", str(images), "--variants", variant],
        cwd=checkout, env=env, capture_output=True, text=True, check=False,
    )
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(variant)]
    if result.returncode != 0 or not rows:
        sys.exit(f"variant_cost.py failed in {checkout}:\n{result.stderr[-2000:]}")
    return float(rows[-1][2])


def in_memory(images, labels):
    """The same images from memory: a full shuffle, batches of 128, as the old path fed them."""
    import tensorflow as tf

    return (tf.data.Dataset.from_tensor_slices((images, labels))
            .shuffle(len(labels), seed=0).batch(128).prefetch(tf.data.AUTOTUNE))


def in_process(repeats: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(HERE / "src"))
    import time

    from cnnpipe.core import layout
    from cnnpipe.core.shards import ShardSet
    from cnnpipe.train.build import build_network, training_batches
    from cnnpipe.train.training import compile_model, seed_everything

    seed_everything(0)
    train = ShardSet(HERE / layout.split_dir("train"))
    images, labels = train.read(range(len(train))), train.labels
    inputs = {
        "in memory": lambda: in_memory(images, labels),
        "shard reader": lambda: training_batches(train, 128, 0, shuffle_buffer_mb=256),
    }
    simple_cnn = {"architecture": "simple_cnn", "seed": 0,
                  "hyperparameters": {"filters": (32, 64, 64), "dense_units": 64}}
    rates = {name: [] for name in inputs}
    for repeat in range(1, repeats + 1):
        for name, make in inputs.items():
            model = build_network(simple_cnn, train.image_shape, 10)
            compile_model(model, 10, 1e-3)
            dataset = make()
            model.fit(dataset.take(3), epochs=1, verbose=0)  # tracing, not timed
            start = time.perf_counter()
            model.fit(dataset, epochs=1, verbose=0)
            rates[name].append(len(labels) / (time.perf_counter() - start))
            print(f"{repeat} {name:14s} {rates[name][-1]:8.0f} img/s", flush=True)
    for name, values in rates.items():
        print(f"median {name:14s} {statistics.median(values):8.0f} img/s")


def reader_cost(repeats: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(HERE / "src"))
    import resource
    import time

    import numpy as np
    import tensorflow as tf

    from cnnpipe.core import layout
    from cnnpipe.core.shards import ShardSet
    from cnnpipe.train.build import training_batches

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    train, test = ShardSet(HERE / layout.split_dir("train")), ShardSet(HERE / layout.split_dir("test"))
    # A reader's cost depends on how scattered the records are, not on their classes.
    subset = np.sort(np.random.default_rng(0).choice(len(train), 10000, replace=False))
    images, labels = train.read(range(len(train))), train.labels
    passes = {
        "shard reader, every image": lambda: training_batches(train, 128, 0,
                                                              shuffle_buffer_mb=256),
        "shard reader, 10,000 subset": lambda: training_batches(train, 128, 0,
                                                                shuffle_buffer_mb=256,
                                                                subset=subset),
        "in memory, every image": lambda: in_memory(images, labels),
    }
    for name, make in passes.items():
        costs = []
        for _ in range(repeats):
            start, count = cpu_seconds(), 0
            for _, batch_labels in make():
                count += len(batch_labels)
            costs.append(1e6 * (cpu_seconds() - start) / count)
        print(f"{name:30s} CPU us/image: " + " ".join(f"{c:.1f}" for c in costs), flush=True)

    # Keras' predict (as evaluate runs it) on a small model: its teardown of the iterator is
    # where the wait for the tuner's thread showed up; a bare Python loop does not wait.
    import keras

    inputs = keras.Input(test.image_shape)
    hidden = keras.layers.Conv2D(16, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(hidden)))
    tuned = tf.data.Options()
    tuned.autotune.enabled = True
    for name, make in {"autotune off": lambda: test.dataset(128),
                       "autotune on": lambda: test.dataset(128).with_options(tuned)}.items():
        model.predict(make().take(1), verbose=0)  # tracing, not timed
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(make(), verbose=0)
            walls.append(time.perf_counter() - start)
        print(f"predict on the test split, {name:13s} wall s: "
              + " ".join(f"{w:.2f}" for w in walls), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="the checkout to compare with")
    parser.add_argument("--in-process", action="store_true",
                        help="alternate the two inputs in one process instead")
    parser.add_argument("--reader-cost", action="store_true",
                        help="time the inputs alone, without a model")
    parser.add_argument("--variants", default="simple_cnn,regularized_cnn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=20000)
    args = parser.parse_args()
    if args.in_process:
        in_process(args.repeats)
        return
    if args.reader_cost:
        reader_cost(args.repeats)
        return
    if args.old is None:
        parser.error("--old PATH is required (or --in-process)")

    old, new = args.old.resolve(), HERE
    print(f"{'variant':18s} {'run':>3s} {'old img/s':>10s} {'new img/s':>10s}")
    for variant in [v for v in args.variants.split(",") if v]:
        rates = {"old": [], "new": []}
        for repeat in range(1, args.repeats + 1):
            for side, checkout in (("old", old), ("new", new)):
                rates[side].append(images_per_second(checkout, variant, args.images))
            print(f"{variant:18s} {repeat:>3d} {rates['old'][-1]:>10.0f} {rates['new'][-1]:>10.0f}",
                  flush=True)
        old_median, new_median = statistics.median(rates["old"]), statistics.median(rates["new"])
        print(f"{variant:18s} median {old_median:>7.0f} {new_median:>10.0f}   "
              f"ratio new/old {new_median / old_median:.3f}", flush=True)


if __name__ == "__main__":
    main()
