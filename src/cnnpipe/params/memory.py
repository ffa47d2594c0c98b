"""How much memory one training step of a variant needs, estimated from params alone.

An honest order-of-magnitude estimate, not a measurement: no TensorFlow is imported, the
layers are walked on paper from the resolved hyperparameters by each architecture's
registration (``cnnpipe.models.zoo``), beside its trunk. It counts

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
from cnnpipe.models import ModelConfigError, get_architecture
from cnnpipe.models.walk import ShapeWalk

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


def training_memory(
    settings,
    raw_shape: tuple[int, int, int],
    preprocessed_shape: tuple[int, int, int],
    batch_size: int,
    num_classes: int,
    shuffle_buffer_bytes: float = 0,
) -> MemoryEstimate:
    """One training step's memory for a variant (its validated schema object, ``settings``)
    taking ``raw_shape`` uint8 images that preprocessing turns into ``preprocessed_shape``.
    The architecture's registration walks its own layers; a feature map that shrinks below
    a window raises ModelConfigError."""
    architecture = get_architecture(settings.architecture)
    model_shape = architecture.input_needs.model_shape(settings, preprocessed_shape)
    walk = ShapeWalk(*raw_shape)
    augmentation = settings.augmentation.model_dump() if settings.augmentation else {}
    walk.store(1 + sum(bool(v) for v in augmentation.values()))  # cast, one per random layer
    walk.h, walk.w, walk.c = model_shape
    walk.store(2)  # resize or channel conversion, normalization
    architecture.walk(walk, settings)
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
        try:
            estimate = training_memory(variant, raw, model, batch, classes, shuffle)
        except ModelConfigError as exc:
            raise ConfigError(f"models.{name}: {exc}") from None
        if estimate.total / 1e9 > limit_gb:
            raise ConfigError(
                f"models.{name}: training needs about {estimate.total / 1e9:.1f} GB (batch "
                f"{batch} at {'x'.join(map(str, estimate.model_shape))}: activations "
                f"{estimate.activations / 1e9:.1f} GB, weights and Adam state "
                f"{estimate.weights / 1e9:.1f} GB), over the {limit_gb:.1f} GB of {where}; "
                f"lower batch_size, the image size or the widths"
            )
