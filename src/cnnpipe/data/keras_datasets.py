"""MNIST, CIFAR-10 and CIFAR-100 through keras.datasets, failing fast when offline.

Keras downloads these on first use into ``$KERAS_HOME/datasets`` (default ``~/.keras``)
with ``urlretrieve``, which has no timeout: without a network it can hang for minutes and
then raises a bare Exception. A short connection probe first turns that into one line.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from cnnpipe.core.errors import DataError

PROBE_TIMEOUT_S = 5
DOWNLOAD_SOCKET_TIMEOUT_S = 60

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


@dataclass(frozen=True)
class KerasDataset:
    origin: str  # what keras downloads, for the probe and the error message
    cache_name: str  # file or folder keras keeps under $KERAS_HOME/datasets
    class_names: tuple[str, ...]
    license: str


DATASETS = {
    "mnist": KerasDataset(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        "mnist.npz",
        tuple(str(d) for d in range(10)),
        "CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
    ),
    "cifar10": KerasDataset(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-batches-py-target",
        CIFAR10_CLASSES,
        "no explicit license; cite Krizhevsky (2009), https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": KerasDataset(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python-target",
        CIFAR100_CLASSES,
        "no explicit license; cite Krizhevsky (2009), https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}


@dataclass(frozen=True)
class KerasArrays:
    train_images: np.ndarray  # (N, H, W, C) uint8
    train_labels: np.ndarray  # (N,) int32
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    license: str
    checksums: dict[str, str]


def keras_cache_dir() -> str:
    """Where keras.utils.get_file keeps datasets (keras' own lookup, without importing keras)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.join(home, "datasets")


def is_cached(name: str) -> bool:
    return os.path.exists(os.path.join(keras_cache_dir(), DATASETS[name].cache_name))


def network_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the URL's host opens, else the reason it did not."""
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def _keras_load_data(name: str):
    import keras  # TensorFlow comes with it; only these sources pay for it

    module = getattr(keras.datasets, name)
    if name == "cifar100":
        return module.load_data(label_mode="fine")
    return module.load_data()


@contextmanager
def _socket_timeout(seconds: float):
    # urlretrieve inside keras takes no timeout; the process-wide default is the only lever.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_keras_dataset(name: str) -> KerasArrays:
    if name not in DATASETS:
        raise DataError(f"unknown keras dataset `{name}`; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    cached = is_cached(name)
    if not cached:
        problem = network_reachable(spec.origin)
        if problem is not None:
            raise DataError(
                f"{name} is not in {keras_cache_dir()} and {spec.origin} is unreachable "
                f"({problem}); copy the keras cache there or use data.source: image_folder"
            )
    try:
        with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            (train_x, train_y), (test_x, test_y) = _keras_load_data(name)
    except Exception as exc:  # noqa: BLE001 - keras raises a bare Exception on fetch failure
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"keras could not load {name}: {first_line}") from None
    arrays = {
        "train_images": _with_channel_axis(train_x),
        "train_labels": np.asarray(train_y).reshape(-1).astype(np.int32),
        "test_images": _with_channel_axis(test_x),
        "test_labels": np.asarray(test_y).reshape(-1).astype(np.int32),
    }
    checksums = {
        f"{name}:{key}": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        for key, value in arrays.items()
    }
    return KerasArrays(
        **arrays,
        class_names=spec.class_names,
        source=f"keras.datasets.{name}" + ("" if cached else f" (downloaded from {spec.origin})"),
        license=spec.license,
        checksums=checksums,
    )


def _with_channel_axis(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.uint8)
    return images[..., None] if images.ndim == 3 else images
