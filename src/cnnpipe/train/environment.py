"""What a run ran on: TensorFlow's determinism holds only for the same hardware, thread count
and library versions, so every training record carries them and a diff can explain itself."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_environment() -> dict:
    import tensorflow as tf

    versions = {}
    for package in ("tensorflow", "keras", "numpy", "dvc"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return {
        "python": platform.python_version(),
        **versions,
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        # 0 means TensorFlow's default: one thread per available core.
        "intra_op_threads": intra or os.cpu_count(),
        "inter_op_threads": inter or os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }
