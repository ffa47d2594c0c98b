"""Training throughput under each ``train.strategy``, on the same data and variant.

    python bench/distribute.py [--images 12000] [--epochs 3] [--variant-json '{...}']

Runs, one after the other, each in fresh processes (the strategies configure TensorFlow
before its first op):

- ``default``: one process, TensorFlow's own thread count (one per core);
- ``mirrored`` over 2 logical CPU devices (``mirrored_devices: 2``), one process;
- ``default`` with one intra- and one inter-op thread: what each worker below gets;
- ``multi_worker``: two processes on 127.0.0.1 (``TF_CONFIG``, free ports), one thread each.

Each run builds and trains through ``build_variant``/``train_variant`` (the train stage's
path) and reports images/s per epoch (training images over the epoch's time, its validation
pass included); the first epoch, which traces the step, is left out of the median. The data is the prepared Fashion-MNIST split of /work/main (read only, a
class-proportional subset of ``--images``) when it exists, else scikit-learn's digits.

Why a CPU box is slower under ``mirrored`` and ``multi_worker``, not faster:

- both replicas run on the same 2 cores: splitting a batch adds no arithmetic units, only
  the work of splitting it and of combining the gradients;
- each replica gets half the batch, so each convolution call does half the work for the same
  fixed cost per call, and oneDNN's kernels use the cores less well on smaller batches;
- ``multi_worker`` all-reduces every gradient over loopback TCP (gRPC collectives) every
  step, and its step is a Python loop of ``tf.function`` calls instead of ``fit``'s;
- a one-thread worker cannot use inter-op parallelism inside its own step.

On GPUs the replicas are separate devices and the comparison turns around; this bench only
shows what the CPU path costs, and that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
FASHION = Path("/work/main/data/prepared")
VARIANT = "bench"
NETWORK = {"architecture": "simple_cnn", "filters": [32, 64, 64], "dense_units": 64}
RUNS = [
    ("default", {}, 1),
    ("mirrored, 2 logical CPUs", {"strategy": "mirrored", "mirrored_devices": 2}, 1),
    ("default, 1 thread", {"intra_op_threads": 1, "inter_op_threads": 1}, 1),
    ("multi_worker, 2 x 1 thread", {"strategy": "multi_worker", "intra_op_threads": 1,
                                    "inter_op_threads": 1}, 2),
]


def epoch_times(settings_path: str) -> None:
    """One process's part (run inside a prepared layout): train, print per-epoch figures."""
    import keras

    from cnnpipe.core.io import read_json
    from cnnpipe.train.build import TrainingData, build_variant, train_variant

    plan = build_variant(read_json(settings_path), TrainingData.open(), variant=VARIANT)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    result = train_variant(plan, callbacks=[timer])
    if plan.distribution.is_chief:
        print(json.dumps({
            "seconds": timer.seconds, "images_per_epoch": result.images_seen / result.epochs_run,
            **plan.distribution.record(), "val_accuracy": result.history["val_accuracy"][-1],
        }))


def prepare_layout(root: Path) -> None:
    """The train stage's inputs under ``root``: Fashion-MNIST's prepared splits (linked, read
    only) or digits written as shards."""
    from cnnpipe.core import layout
    from cnnpipe.core.io import write_json

    if (FASHION / "train" / "index.json").is_file():
        (root / layout.PREPARED).mkdir(parents=True)
        for split in ("train", "val"):
            os.symlink(FASHION / split, root / layout.split_dir(split))
        shutil.copy(FASHION / "data_card.json", root / layout.DATA_CARD)
        preprocessing = json.loads((FASHION.parent / "processed/preprocessing.json").read_text())
        write_json(root / layout.PREPROCESSING, preprocessing)
        return
    sys.path.insert(0, str(HERE))
    from tests.test_distribute import digits_splits, write_layout

    write_layout(root, digits_splits())


def settings_file(root: Path, number: int, changes: dict, images: int, epochs: int) -> Path:
    from cnnpipe.core.io import write_json
    from cnnpipe.params import parse_params
    from cnnpipe.params.resolve import train_config

    train = {"epochs": epochs, "batch_size": 128, "min_steps_per_epoch": 0,
             "min_images_seen": 0, "early_stopping_patience": 0, **changes}
    params = parse_params({"seed": 1, "data": {"source": "mnist", "input": "resolved/prepare.json"},
                           "train": train, "models": {VARIANT: {**NETWORK, "train_images": images}}})
    path = root / f"run{number}.json"
    write_json(path, train_config(params, VARIANT))
    return path


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run(root: Path, settings: Path, processes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(processes)]}
    started = []
    for index in range(processes):
        if processes > 1:
            env = {**env, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                   "task": {"type": "worker", "index": index}})}
        started.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--epoch-times", str(settings)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [process.communicate() for process in started]
    for process, (out, err) in zip(started, outputs, strict=True):
        if process.returncode != 0:
            sys.exit(f"a run failed ({settings.name}):\n{err[-3000:]}")
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch-times", metavar="SETTINGS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epoch_times:
        epoch_times(args.epoch_times)
        return
    sys.path.insert(0, str(HERE / "src"))
    with tempfile.TemporaryDirectory(prefix="cnnpipe-bench-") as scratch:
        root = Path(scratch)
        prepare_layout(root)
        print(f"{'run':28s} {'replicas':>8s} {'images/s per epoch (epochs 2+)':>32s} "
              f"{'median':>8s} {'val acc':>8s}")
        for number, (name, changes, processes) in enumerate(RUNS):
            figures = run(root, settings_file(root, number, changes, args.images, args.epochs),
                          processes)
            rates = [figures["images_per_epoch"] / s for s in figures["seconds"]]
            later = rates[1:] or rates
            print(f"{name:28s} {figures['replicas']:8d} "
                  f"{' '.join(f'{r:7.0f}' for r in rates):>32s} "
                  f"{statistics.median(later):8.0f} {figures['val_accuracy']:8.4f}", flush=True)


if __name__ == "__main__":
    main()
