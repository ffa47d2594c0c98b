"""train.strategy: `mirrored` over 2 logical CPU devices and two `multi_worker` processes on
127.0.0.1 train what one process trains, each through the train stage's own command
(`python stages/train.py VARIANT`) on scikit-learn's digits (real images, offline)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnpipe.core import layout
from cnnpipe.core.errors import ConfigError
from cnnpipe.core.io import write_json
from cnnpipe.core.shards import write_arrays
from cnnpipe.params import parse_params
from cnnpipe.params.resolve import train_config
from cnnpipe.train.distribute import worker_task

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "digits"
SIDE = 28  # simple_cnn's three valid convs and two pools need at least 20 pixels a side
TEST_IMAGES, VAL_IMAGES = 359, 180  # of 1,797: 359 test images make an accuracy step of 0.003
STAGE_TIMEOUT = 600  # generous: a shared 2-core machine runs a stage several times slower
# One thread each: two workers share the machine's 2 cores without oversubscribing them.
TRAIN = {"epochs": 10, "batch_size": 32, "min_steps_per_epoch": 0, "min_images_seen": 0,
         "intra_op_threads": 1, "inter_op_threads": 1}
NETWORK = {"architecture": "simple_cnn", "filters": [32, 64, 64], "dense_units": 64}


def digits_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits as uint8 28x28x1 images (Pillow's bilinear upscaling), split once at random."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    images = np.stack([
        np.asarray(Image.fromarray(p).resize((SIDE, SIDE), Image.Resampling.BILINEAR))
        for p in pixels
    ])[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    cuts = {"test": order[:TEST_IMAGES], "val": order[TEST_IMAGES:TEST_IMAGES + VAL_IMAGES],
            "train": order[TEST_IMAGES + VAL_IMAGES:]}
    return {split: (images[i], digits.target[i].astype(np.int32)) for split, i in cuts.items()}


def write_layout(root: Path, splits, **train) -> Path:
    """What train@VARIANT reads, under ``root``: its resolved settings, the prepared train
    and val splits, the data card and the preprocessing settings."""
    params = parse_params({
        "seed": 5, "data": {"source": "mnist", "input": "resolved/prepare.json"},
        "train": {**TRAIN, **train}, "models": {VARIANT: NETWORK},
    })
    write_json(root / layout.resolved_train(VARIANT), train_config(params, VARIANT))
    for split in ("train", "val"):
        write_arrays(root / layout.split_dir(split), *splits[split])
    write_json(root / layout.DATA_CARD, {
        "class_names": [str(d) for d in range(10)], "num_classes": 10,
        "image_shape": [SIDE, SIDE, 1], "channels": 1,
    })
    write_json(root / layout.PREPROCESSING, {
        "image_size": [SIDE, SIDE], "channels": 1, "normalization": "unit", "mean": None,
        "std": None, "scale": 255, "prepared_channels": 1, "channel_conversion": None,
    })
    return root


def stage(root: Path, tf_config: dict | None = None) -> subprocess.Popen:
    """``python stages/train.py VARIANT`` in ``root``, as dvc.yaml runs it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stages/train.py"), VARIANT], cwd=root, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(*processes: subprocess.Popen) -> list[tuple[int, str]]:
    """Each process's exit code and output; all are killed if one outlives the timeout."""
    results = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=STAGE_TIMEOUT)
            results.append((process.returncode, output))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        raise AssertionError(f"a train stage ran past {STAGE_TIMEOUT} s") from None
    return results


def train_here(root: Path) -> str:
    (code, output), = finish(stage(root))
    assert code == 0, output[-3000:]
    return output


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def predicted_classes(root: Path, images: np.ndarray) -> np.ndarray:
    from cnnpipe.inference import TrainedVariant

    return TrainedVariant.load(root / layout.model_dir(VARIANT)).predict(images).argmax(axis=1)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def splits():
    return digits_splits()


@pytest.fixture(scope="module")
def one_process(splits, tmp_path_factory):
    """The reference: the same variant and settings, strategy default."""
    root = write_layout(tmp_path_factory.mktemp("default"), splits)
    train_here(root)
    return root


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_predicts_like_one_device(splits, one_process, tmp_path):
    root = write_layout(tmp_path, splits, strategy="mirrored", mirrored_devices=2)
    train_here(root)
    card = json.loads((root / layout.model_card(VARIANT)).read_text())
    assert card["trained_as"]["strategy"] == "mirrored"
    assert card["trained_as"]["replicas"] == 2
    record = json.loads((root / layout.train_metrics(VARIANT)).read_text())
    assert (record["strategy"], record["replicas"], record["workers"]) == ("mirrored", 2, 1)
    test_images = splits["test"][0]
    reference = predicted_classes(one_process, test_images)
    assert agreement(predicted_classes(root, test_images), reference) >= 0.97
    assert np.mean(reference == splits["test"][1]) >= 0.9  # the reference itself learned


@pytest.mark.slow
def test_two_workers_train_one_model_and_only_the_chief_writes(splits, one_process, tmp_path):
    roots = [write_layout(tmp_path / f"worker{i}", splits, strategy="multi_worker")
             for i in range(2)]
    before = [files_under(root) for root in roots]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = [stage(root, {"cluster": cluster, "task": {"type": "worker", "index": i}})
               for i, root in enumerate(roots)]
    results = finish(*workers)
    for code, output in results:
        assert code == 0, output[-3000:]

    assert files_under(roots[1]) == before[1]  # the other worker wrote nothing
    written = files_under(roots[0]) - before[0]
    for output in (layout.model_file(VARIANT), layout.weights_file(VARIANT),
                   layout.model_card(VARIANT), layout.train_metrics(VARIANT),
                   layout.curve_table("loss", VARIANT), layout.curve_table("accuracy", VARIANT)):
        assert str(output) in written
    digests = [line.rsplit(" ", 1)[1] for _, output in results
               for line in output.splitlines() if "weights sha256" in line]
    assert len(digests) == 2 and digests[0] == digests[1]

    card = json.loads((roots[0] / layout.model_card(VARIANT)).read_text())
    assert (card["trained_as"]["strategy"], card["trained_as"]["workers"]) == ("multi_worker", 2)
    assert card["trained_as"]["replicas"] == 2
    curve = (roots[0] / layout.curve_table("loss", VARIANT)).read_text().splitlines()
    record = json.loads((roots[0] / layout.train_metrics(VARIANT)).read_text())
    assert len(curve) == record["epochs_run"] + 1  # a header and one row per epoch
    test_images = splits["test"][0]
    together = predicted_classes(roots[0], test_images)
    assert agreement(together, predicted_classes(one_process, test_images)) >= 0.97


def test_multi_worker_needs_tf_config_and_a_task_in_its_cluster():
    with pytest.raises(ConfigError, match="TF_CONFIG is not set"):
        worker_task({})
    with pytest.raises(ConfigError, match="must be JSON"):
        worker_task({"TF_CONFIG": "{not json"})
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    with pytest.raises(ConfigError, match="worker 2 is not in its cluster"):
        worker_task({"TF_CONFIG": json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": 2}})})
    second = worker_task({"TF_CONFIG": json.dumps({"cluster": cluster,
                                                   "task": {"type": "worker", "index": 1}})})
    assert (second.workers, second.is_chief) == (2, False)
    with_chief = {"chief": ["127.0.0.1:3"], **cluster}
    first = worker_task({"TF_CONFIG": json.dumps({"cluster": with_chief,
                                                  "task": {"type": "worker", "index": 0}})})
    assert (first.workers, first.is_chief) == (3, False)


def test_a_stage_without_tf_config_stops_in_one_line(splits, tmp_path, monkeypatch, capsys):
    import importlib.util

    from cnnpipe.core.runner import run

    root = write_layout(tmp_path, splits, strategy="multi_worker")
    monkeypatch.chdir(root)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    spec = importlib.util.spec_from_file_location("train_stage", ROOT / "stages/train.py")
    train_stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_stage)
    with pytest.raises(SystemExit) as exited:
        run(train_stage.main, VARIANT)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: train.strategy is multi_worker but TF_CONFIG is not set")
    assert "\n" not in error
    assert not (root / "models").exists()


@pytest.mark.parametrize(("train", "variant", "message"), [
    ({"strategy": "gpus"}, {}, "train.strategy: input should be 'default', 'mirrored'"),
    ({"mirrored_devices": 2}, {}, "models.v: mirrored_devices (2) applies to strategy mirrored"),
    ({"intra_op_threads": 0}, {}, "train.intra_op_threads: input should be greater than 0"),
    ({}, {"strategy": "multi_worker", "weights": "pretrain"},
     "models.v: strategy multi_worker does not run the rotation pretraining"),
])
def test_bad_strategy_settings_are_refused_in_one_line(train, variant, message):
    network = ({"architecture": "mobilenet_transfer", "image_size": 32} if "weights" in variant
               else NETWORK)
    with pytest.raises(ConfigError) as refused:
        parse_params({"seed": 1, "data": {"source": "mnist", "input": "resolved/prepare.json"},
                      "train": train, "models": {"v": {**network, **variant}}})
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_strategy_settings_resolve_per_variant_and_default_to_one_process():
    params = parse_params({
        "seed": 1, "data": {"source": "mnist", "input": "resolved/prepare.json"},
        "train": {"intra_op_threads": 2},
        "models": {"plain": NETWORK, "wide": {**NETWORK, "strategy": "mirrored",
                                                "mirrored_devices": 2}},
    })
    plain, wide = (train_config(params, name)["train"] for name in ("plain", "wide"))
    assert (plain["strategy"], plain["mirrored_devices"], plain["intra_op_threads"]) == (
        "default", None, 2)
    assert (wide["strategy"], wide["mirrored_devices"], wide["inter_op_threads"]) == (
        "mirrored", 2, None)


def test_the_default_path_configures_nothing_and_records_one_replica():
    from cnnpipe.train.distribute import start_distribution

    defaults = train_config(parse_params({
        "seed": 1, "data": {"source": "mnist", "input": "resolved/prepare.json"},
        "models": {"v": NETWORK},
    }), "v")["train"]
    distribution = start_distribution(defaults)
    assert distribution.strategy is None
    assert distribution.record() == {"strategy": "default", "replicas": 1, "workers": 1}
    assert distribution.global_batch(25) == 25



def test_workers_share_the_records_between_them_by_shard_or_by_record(tmp_path):
    """Whole shards when there are enough of them, every n-th record when not: each record
    of the subset goes to exactly one worker."""
    import tensorflow as tf

    from cnnpipe.core.shards import ShardSet, ShardWriter
    from cnnpipe.train.worker_loop import worker_records

    images = np.zeros((250, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 0] = np.divmod(np.arange(250), 256)  # each its index
    with ShardWriter(tmp_path / "split", (2, 2, 1), records_per_shard=60) as writer:
        writer.add_batch(images, np.arange(250) % 7)
    shards = ShardSet(tmp_path / "split")
    # 5 shards: by shard for 2 and 5 workers, by record for 7 workers, and for 2 when the
    # subset lies in one shard (whole shards would leave a worker nothing).
    cases = [(np.arange(0, 250, 3), workers, seed) for workers in (2, 5, 7) for seed in (None, 4)]
    cases.append((np.arange(0, 50), 2, 4))
    for subset, workers, seed in cases:
        seen = []
        for worker in range(workers):
            records, count = worker_records(tf, shards, subset, workers, worker, seed)
            # A record is a 2-byte label, then the pixels: the first two hold its index.
            indices = [256 * int(r.numpy()[2]) + int(r.numpy()[3]) for r in records]
            assert 0 < len(indices) == count
            seen += indices
        assert sorted(seen) == subset.tolist(), (workers, seed)


@pytest.mark.parametrize("classes", [2, 3])
def test_the_worker_step_scores_as_keras_does(splits, classes, tmp_path):
    """The project's step under a strategy (here one device in-process) trains, and its
    validation loss and accuracy, padded records and all, equal Keras' evaluate: label
    smoothing, balanced class weights, a sigmoid head for two classes."""
    import tensorflow as tf

    from cnnpipe.train.build import TrainingData, TrainingPlan, build_network, training_batches
    from cnnpipe.train.distribute import MULTI_WORKER, Distribution, WorkerTask
    from cnnpipe.train.training import balanced_class_weight, compile_model, with_one_hot_labels
    from cnnpipe.train.worker_loop import train_across_workers

    def subset(split, size):
        images, labels = splits[split]
        keep = np.flatnonzero(labels < classes)[:size]
        return images[keep], labels[keep]

    data = TrainingData(
        train=write_arrays(tmp_path / "train", *subset("train", 300)),
        val=write_arrays(tmp_path / "val", *subset("val", 45)),  # not a multiple of a batch
        card={"num_classes": classes, "class_names": [str(c) for c in range(classes)]},
        preprocessing={"image_size": [SIDE, SIDE], "channels": 1, "normalization": "unit"},
    )
    config = train_config(parse_params({
        "seed": 3, "data": {"source": "mnist", "input": "resolved/prepare.json"},
        "train": {**TRAIN, "epochs": 4, "early_stopping_patience": 0, "class_weight": "balanced"},
        "models": {VARIANT: NETWORK},
    }), VARIANT)
    settings = config["train"]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_network(config, (SIDE, SIDE, 1), classes, data.preprocessing)
    labelled = np.arange(len(data.train))
    plan = TrainingPlan(
        variant=VARIANT, config=config, settings=settings, trained_as=None, model=model,
        train_ds=training_batches(data.train, 32, 3, shuffle_buffer_mb=1),
        val_ds=data.val.dataset(32), data=data, labelled=labelled,
        class_weight=balanced_class_weight(data.train.labels, classes),
        distribution=Distribution(MULTI_WORKER, strategy, WorkerTask("worker", 0, 1)),
    )
    result = train_across_workers(plan)
    assert result.epochs_run == 4 and set(result.history) == {
        "loss", "accuracy", "val_loss", "val_accuracy"}

    with strategy.scope():
        compile_model(model, classes, settings["learning_rate"], settings)
    val = plan.val_ds if classes == 2 else with_one_hot_labels(plan.val_ds, classes)
    scores = model.evaluate(val, return_dict=True, verbose=0)
    assert result.history["val_loss"][-1] == pytest.approx(scores["loss"], rel=1e-5)
    assert result.history["val_accuracy"][-1] == pytest.approx(scores["accuracy"], abs=1e-6)
    assert result.history["val_accuracy"][-1] > 0.8
