"""Where a variant trains: ``train.strategy`` and the thread settings, applied before
TensorFlow runs its first op.

- ``default``: one process on TensorFlow's default device, Keras ``fit``; every committed
  model trained so, and with the other settings at their defaults nothing here runs.
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs, or over
  ``mirrored_devices`` logical CPU devices (to try it on a CPU box), still with ``fit``.
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the machines
  ``TF_CONFIG`` names, with the project's own step (cnnpipe.train.worker_loop), because Keras'
  ``fit`` fails under it (keras-team/keras issue 20585).

The global batch is the resolved ``batch_size`` under every strategy: each of R replicas
takes batch_size / R images a step, and the step averages the gradient over the whole global
batch. The learning rate is therefore not scaled: the linear scaling rule is for a global
batch that grows with the replicas, and ours does not grow. (Raise ``batch_size`` to keep
each replica's share, and scale ``learning_rate`` with it yourself if you do.) Under
``multi_worker`` the global batch is rounded down to a multiple of the replicas, which its
per-replica input needs; ``fit`` under ``mirrored`` splits an uneven batch itself.

The thread counts and logical devices can only be set before TensorFlow initializes; the
train stage is a fresh process, so they are. Changing any of them changes the weights
bitwise, which is why they are resolved settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cnnpipe.core.errors import ConfigError

DEFAULT = "default"
MIRRORED = "mirrored"
MULTI_WORKER = "multi_worker"


@dataclass(frozen=True)
class WorkerTask:
    """This process's place in the cluster ``TF_CONFIG`` describes."""

    task_type: str  # chief or worker
    index: int
    workers: int  # processes that train together, the chief included
    has_chief: bool = False  # a cluster with no chief task makes worker 0 its chief

    @property
    def is_chief(self) -> bool:
        """The one process that writes outputs."""
        if self.has_chief:
            return self.task_type == "chief"
        return self.index == 0


def worker_task(environ: Mapping[str, str] = os.environ) -> WorkerTask:
    """The task ``TF_CONFIG`` gives this process, or a one-line ConfigError saying what is
    wrong with it."""
    raw = environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            "train.strategy is multi_worker but TF_CONFIG is not set; give every worker its "
            "cluster and task (docs/distributed.md)"
        )
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], int(task["index"])
        counts = {kind: len(cluster.get(kind, [])) for kind in ("chief", "worker")}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"TF_CONFIG must be JSON with cluster.worker (a list of host:port) and task.type "
            f"and task.index ({type(exc).__name__}: {exc})"
        ) from None
    if task_type not in counts or not 0 <= index < counts[task_type]:
        raise ConfigError(
            f"TF_CONFIG task {task_type} {index} is not in its cluster "
            f"({counts['chief']} chief, {counts['worker']} workers)"
        )
    return WorkerTask(task_type, index, counts["chief"] + counts["worker"],
                      has_chief=counts["chief"] > 0)


@dataclass(frozen=True)
class Distribution:
    """The strategy a plan trains under; ``strategy`` is None on the default path."""

    name: str = DEFAULT
    strategy: Any = None
    task: WorkerTask | None = None

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync) if self.strategy is not None else 1

    @property
    def workers(self) -> int:
        return self.task.workers if self.task else 1

    @property
    def is_chief(self) -> bool:
        return self.task is None or self.task.is_chief

    def scope(self):
        """Where variables must be created: the strategy's scope, or nothing at all."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def global_batch(self, batch_size: int) -> int:
        """The batch a step takes across every replica (see the module's docstring)."""
        if self.name != MULTI_WORKER:
            return batch_size
        return max(self.replicas, batch_size - batch_size % self.replicas)

    def record(self) -> dict[str, Any]:
        """For the model card and metrics/train."""
        return {"strategy": self.name, "replicas": self.replicas, "workers": self.workers}


def start_distribution(settings: Mapping[str, Any]) -> Distribution:
    """Apply the thread settings and create the variant's strategy: before any op runs."""
    name = settings.get("strategy", DEFAULT)
    task = worker_task() if name == MULTI_WORKER else None
    configure_runtime(settings)
    if name == DEFAULT:
        return Distribution()
    import tensorflow as tf

    if name == MIRRORED:
        devices = settings.get("mirrored_devices")
        names = [f"/cpu:{i}" for i in range(devices)] if devices else None
        return Distribution(MIRRORED, tf.distribute.MirroredStrategy(names))
    if name == MULTI_WORKER:
        return Distribution(MULTI_WORKER, tf.distribute.MultiWorkerMirroredStrategy(), task)
    raise ConfigError(f"train.strategy must be default, mirrored or multi_worker; got {name!r}")


def configure_runtime(settings: Mapping[str, Any]) -> None:
    """Pin TensorFlow's thread pools and split the CPU into ``mirrored_devices`` logical
    devices, where the settings ask; nothing at all where they are null."""
    intra, inter = settings.get("intra_op_threads"), settings.get("inter_op_threads")
    devices = settings.get("mirrored_devices") if settings.get("strategy") == MIRRORED else None
    if intra is None and inter is None and devices is None:
        return
    import tensorflow as tf

    try:
        if intra is not None:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        if devices is not None:
            _split_cpu(tf, devices)
    except RuntimeError:
        raise ConfigError(
            "train.intra_op_threads, inter_op_threads and mirrored_devices take effect only "
            "before TensorFlow runs its first op; train in a fresh process (the train stage does)"
        ) from None


def _split_cpu(tf, devices: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    # Asked without initializing TensorFlow (listing logical devices would).
    if len(tf.config.get_logical_device_configuration(cpu) or ()) == devices:
        return  # already split so: a second plan in the same process
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    )


def weights_digest(model) -> str:
    """SHA-256 of every weight's bytes, in order: equal on workers that ended identical."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()
