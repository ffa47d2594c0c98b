"""How much memory one training step of a variant needs, estimated from params alone.

An honest order-of-magnitude estimate, not a measurement: no TensorFlow is imported, the
layers are walked on paper from the resolved hyperparameters, mirroring the builders in
``cnnpipe.models``. It counts

- activations: every layer's float32 output for a whole batch (kept for the backward pass),
  plus two of the largest for the gradients in flight;
- weights four times over: the weights, their gradients and Adam's two moments;
- the input pipeline: the shuffle buffer (``train.shuffle_buffer_mb``);
- the runtime: TensorFlow and Keras themselves, a constant measured here.

``bench/memory_estimate.py`` compares it with the peak RSS of real training steps; the
numbers are in bench/RESULTS.md. Its use is refusing a params.yaml that cannot fit (a batch
of 128 at 2048x2048 needs hundreds of GB) before any stage starts, not predicting exact use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from cnnpipe.core.errors import ConfigError

FLOAT_BYTES = 4
# Weights, their gradients and Adam's two moment estimates.
COPIES_PER_WEIGHT = 4
# Peak RSS of a training step of a tiny model on a tiny batch (bench/memory_estimate.py):
# the interpreter, TensorFlow, Keras, the traced step functions.
RUNTIME_BYTES = 1.0 * 2**30
# Channels and classes of the sources that fix them; folders follow their files.
SOURCE_SHAPES = {
    "fashion_mnist": ((28, 28, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
}
UNKNOWN_CLASSES = 10  # a folder's class count is known only after prepare; the head is tiny


@dataclass(frozen=True)
class MemoryEstimate:
    model_shape: tuple[int, int, int]  # what the trunk works at, after the input layers
    activations: float  # bytes
    weights: float  # bytes, weights + gradients + optimizer state
    input_pipeline: float  # bytes
    runtime: float = RUNTIME_BYTES

    @property
    def total(self) -> float:
        return self.activations + self.weights + self.input_pipeline + self.runtime


class _Walk:
    """Shapes through a network, per image: elements of every stored output, parameters."""

    def __init__(self, height: int, width: int, channels: int):
        self.h, self.w, self.c = height, width, channels
        self.elements = 0
        self.largest = 0
        self.params = 0

    def store(self, tensors: float = 1) -> None:
        size = self.h * self.w * self.c
        self.elements += size * tensors
        self.largest = max(self.largest, size)

    def conv(self, filters, kernel, strides=1, padding="same", bias=True, activation=False):
        self.params += kernel * kernel * self.c * filters + (filters if bias else 0)
        if padding == "valid":  # the builders refuse a window larger than the image
            self.h, self.w = max(1, self.h - kernel + 1), max(1, self.w - kernel + 1)
        self.h, self.w = math.ceil(self.h / strides), math.ceil(self.w / strides)
        self.c = filters
        self.store(2 if activation else 1)  # the conv output, then the activation's

    def depthwise(self, strides):
        self.params += 9 * self.c
        self.h, self.w = math.ceil(self.h / strides), math.ceil(self.w / strides)
        self.store()

    def bn_relu(self, relu=True):
        self.params += 4 * self.c  # gamma, beta, moving mean and variance
        self.store(2 if relu else 1)

    def pool(self, size=2, strides=None):
        strides = strides or size
        if strides > 1:
            self.h, self.w = max(1, self.h // strides), max(1, self.w // strides)
        self.store()

    def elementwise(self, tensors=1):
        self.store(tensors)  # dropout, add, multiply, concatenate: one more tensor each

    def flatten(self):
        self.h, self.w, self.c = 1, 1, self.h * self.w * self.c

    def global_pool(self):
        self.h, self.w = 1, 1
        self.store()

    def dense(self, units, activation=True):
        self.params += self.c * units + units
        self.c = units
        self.store(2 if activation else 1)

    def head(self, num_classes):
        self.dense(1 if num_classes == 2 else num_classes)


def _make_divisible(value, divisor=8):
    """Keras MobileNetV2's channel rounding."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# Keras MobileNetV2's inverted residual blocks: (expansion, filters, repeats, first stride).
_MOBILENET_BLOCKS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def _mobilenet(walk: _Walk, hp: dict) -> None:
    alpha = hp["alpha"]
    walk.conv(_make_divisible(32 * alpha), 3, strides=2, bias=False)
    walk.bn_relu()
    for expansion, filters, repeats, first_stride in _MOBILENET_BLOCKS:
        out = _make_divisible(int(filters * alpha))
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            block_in = walk.c
            if expansion > 1:
                walk.conv(block_in * expansion, 1, bias=False)
                walk.bn_relu()
            if stride == 2:
                walk.store()  # ZeroPadding2D before the strided depthwise conv
            walk.depthwise(stride)
            walk.bn_relu()
            walk.conv(out, 1, bias=False)
            walk.bn_relu(relu=False)
            if stride == 1 and block_in == out:
                walk.elementwise()
    walk.conv(_make_divisible(1280 * alpha) if alpha > 1.0 else 1280, 1, bias=False)
    walk.bn_relu()
    walk.global_pool()
    walk.dense(hp["dense_units"])
    walk.elementwise()


def _conv_bn_relu(walk, filters, kernel, strides=1):
    walk.conv(filters, kernel, strides=strides, bias=False)
    walk.bn_relu()


def _trunk(walk: _Walk, architecture: str, hp: dict) -> None:
    """The layers after the input block, as cnnpipe.models.architectures builds them."""
    if architecture == "simple_cnn":
        for i, width in enumerate(hp["filters"], start=1):
            walk.conv(width, hp["kernel_size"], padding="valid", activation=True)
            if i < len(hp["filters"]):
                walk.pool()
        walk.flatten()
        walk.dense(hp["dense_units"])
    elif architecture == "regularized_cnn":
        for width in hp["filters"]:
            _conv_bn_relu(walk, width, hp["kernel_size"])
            _conv_bn_relu(walk, width, hp["kernel_size"])
            walk.pool()
            walk.elementwise()
        walk.flatten()
        walk.dense(hp["dense_units"])
        walk.bn_relu(relu=False)
        walk.elementwise()
    elif architecture == "overfit_cnn":
        for width in hp["filters"]:
            walk.conv(width, hp["kernel_size"], padding="valid", activation=True)
        walk.pool()
        walk.flatten()
        walk.dense(hp["dense_units"])
    elif architecture in ("bn_gap_cnn", "augmented_cnn"):
        for width in hp["filters"]:
            _conv_bn_relu(walk, width, hp["kernel_size"])
            walk.pool()
        walk.global_pool()
        walk.dense(hp["dense_units"])
        walk.elementwise()
    elif architecture == "residual_cnn":
        _conv_bn_relu(walk, hp["stem_filters"], hp["stem_kernel"], hp["stem_strides"])
        block_in = walk.c
        _conv_bn_relu(walk, hp["residual_filters"], hp["kernel_size"])
        walk.conv(hp["residual_filters"], hp["kernel_size"], bias=False)
        walk.bn_relu(relu=False)
        if block_in != hp["residual_filters"]:
            walk.params += block_in * walk.c + 4 * walk.c
            walk.store(2)  # the 1x1 projection and its BatchNorm
        walk.elementwise(2)  # add, relu
        for width in hp["block_filters"]:
            _conv_bn_relu(walk, width, hp["kernel_size"])
            _conv_bn_relu(walk, width, hp["kernel_size"])
            walk.pool()
        walk.global_pool()
        walk.dense(hp["dense_units"])
        walk.elementwise()
    elif architecture == "inception_attention":
        _conv_bn_relu(walk, hp["stem_filters"], hp["stem_kernel"], hp["stem_strides"])
        for i, width in enumerate(hp["inception_filters"], start=1):
            if i > 1:
                walk.pool()
            c_in = walk.c
            branches = [  # (reduce width or None, kernel, width), GoogLeNet module 3a
                (None, 1, width), (width * 3 // 2, 3, 2 * width),
                (width // 4, 5, width // 2), ("pool", 1, width // 2),
            ]
            out = 0
            for reduce, kernel, filters in branches:
                walk.c = c_in
                if reduce == "pool":
                    walk.store()
                elif reduce is not None:
                    walk.conv(max(1, reduce), 1, activation=True)
                walk.conv(max(1, filters), kernel, activation=True)
                out += max(1, filters)
            walk.c = out
            walk.elementwise()  # concatenate
            hidden = max(1, out // hp["attention_ratio"])
            walk.params += out * hidden + hidden + hidden * out + out
            walk.elementwise()  # channel-attention rescaling
        walk.global_pool()
        walk.elementwise()
    elif architecture == "mobilenet_transfer":
        _mobilenet(walk, hp)
    else:  # a schema without a walk here: registered schemas and this file disagree
        raise ConfigError(f"no memory estimate for architecture `{architecture}`")


def training_memory(
    architecture: str,
    hyperparameters: dict,
    raw_shape: tuple[int, int, int],
    model_shape: tuple[int, int, int],
    batch_size: int,
    num_classes: int,
    shuffle_buffer_bytes: float = 0,
) -> MemoryEstimate:
    """One training step's memory for a variant taking ``raw_shape`` uint8 images and
    working at ``model_shape`` (after the model's own resize and channel conversion)."""
    if architecture == "mobilenet_transfer":
        side = hyperparameters["image_size"]
        model_shape = (side, side, 3)
    walk = _Walk(*raw_shape)
    augmentations = sum(bool(v) for v in (hyperparameters.get("augmentation") or {}).values())
    walk.store(1 + augmentations)  # the cast to float, then one tensor per random layer
    walk.h, walk.w, walk.c = model_shape
    walk.store(2)  # resize or channel conversion, normalization
    _trunk(walk, architecture, hyperparameters)
    walk.head(num_classes)
    raw_bytes = math.prod(raw_shape) * batch_size  # the uint8 batch itself
    return MemoryEstimate(
        model_shape=tuple(model_shape),
        activations=(walk.elements + 2 * walk.largest) * batch_size * FLOAT_BYTES + raw_bytes,
        weights=walk.params * FLOAT_BYTES * COPIES_PER_WEIGHT,
        input_pipeline=shuffle_buffer_bytes,
    )


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class MemoryLimit:
    bytes: int
    source: str  # what sets it, for the refusal message


def memory_limit(cgroup_root: Path | None = None, proc_cgroup: Path | None = None) -> MemoryLimit:
    """The memory this process may use: physical RAM, or less where a cgroup limit (v2's
    ``memory.max`` or v1's ``memory.limit_in_bytes``, of this process's own cgroup and of every
    enclosing one, as nested containers set them) or the process's own limit (``ulimit -v``,
    ``-d``) allows less. The smallest wins."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cgroups = _cgroup_limits(cgroup_root or CGROUP_ROOT, proc_cgroup or PROC_CGROUP)
    limits = [MemoryLimit(ram, "this machine's memory"), *cgroups, *_process_limits()]
    return min(limits, key=lambda limit: limit.bytes)


def _cgroup_limits(root: Path, proc_cgroup: Path) -> list[MemoryLimit]:
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # the v2 unified hierarchy (beside v1's on a hybrid host)
            unified = root / "unified" if (root / "unified").is_dir() else root
            found += _limits_up_from(unified, path, "memory.max", "cgroup v2")
        elif "memory" in controllers.split(","):
            found += _limits_up_from(root / "memory", path, "memory.limit_in_bytes", "cgroup v1")
    return found


def _limits_up_from(base: Path, path: str, name: str, kind: str) -> list[MemoryLimit]:
    """The limit files from the process's cgroup up to the hierarchy's root. A container that
    mounts its own cgroup as the root has no folder for the host's path: its limit is then in
    the root's file, which the walk reaches too."""
    found, current = [], Path(path.strip("/"))
    while True:
        file = base / current / name
        try:
            text = file.read_text().strip()
        except OSError:
            text = ""
        if text.isdigit():  # "max" (v2) is no limit; v1's "no limit" is a huge number
            found.append(MemoryLimit(int(text), f"the container's limit ({kind} {file})"))
        if current == current.parent:
            return found
        current = current.parent


def _process_limits() -> list[MemoryLimit]:
    import resource

    found = []
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        soft, _ = resource.getrlimit(getattr(resource, name))
        if soft != resource.RLIM_INFINITY and soft > 0:
            found.append(MemoryLimit(soft, f"this process's {name} (ulimit)"))
    return found


def input_shapes(params) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    """(stored image shape, shape after the model's preprocessing, class count), as far as
    params know them: a folder's channels follow its files, so RGB, the larger, is assumed."""
    data = params.data
    if data.source in SOURCE_SHAPES:
        raw, classes = SOURCE_SHAPES[data.source]
    else:
        raw = (*data.images.image_size, data.images.channels or 3)
        classes = UNKNOWN_CLASSES
    if data.classes is not None:
        classes = len(data.classes)
    side = params.preprocess.image_size
    model = (*((side, side) if side else raw[:2]), params.preprocess.channels or raw[2])
    return raw, model, classes


def check_training_memory(params) -> None:
    """Refuse, in one line naming the variant, one whose estimate exceeds
    ``train.max_memory_gb`` (null: this machine's memory)."""
    limit_gb = params.train.max_memory_gb
    where = "train.max_memory_gb"
    if limit_gb is None:
        limit = memory_limit()
        limit_gb = limit.bytes / 1e9
        where = f"{limit.source} (train.max_memory_gb: null)"
    raw, model, classes = input_shapes(params)
    shuffle = params.train.shuffle_buffer_mb * 2**20
    for name, variant in params.models.items():
        batch = variant.batch_size or params.train.batch_size
        estimate = training_memory(
            variant.architecture, variant.hyperparameters(), raw, model, batch, classes, shuffle
        )
        if estimate.total / 1e9 > limit_gb:
            raise ConfigError(
                f"models.{name}: training needs about {estimate.total / 1e9:.1f} GB (batch "
                f"{batch} at {'x'.join(map(str, estimate.model_shape))}: activations "
                f"{estimate.activations / 1e9:.1f} GB, weights and Adam state "
                f"{estimate.weights / 1e9:.1f} GB), over the {limit_gb:.1f} GB of {where}; "
                f"lower batch_size, the image size or the widths"
            )
