"""Resuming a killed train@<variant> from its last completed epoch.

The state lives in ``.cnnpipe/resume/<variant>/``, outside every DVC output and ignored by git
and DVC: a ``tf.train.CheckpointManager`` checkpoint of the model's variables (its weights and
the Keras SeedGenerator states that Dropout and augmentation draw from) and the optimizer's
(its step count drives the learning-rate schedule), beside ``state.json`` (epochs run, the
phase, the history behind the curves, EarlyStopping's counters) and EarlyStopping's best
weights. It is written after every epoch, removed when the stage succeeds, and dropped when
its fingerprint (resolved settings, prepared data, code) differs from the run's.

The shuffle is replayed, not re-seeded, so uninterrupted runs keep their committed weights:
each new iterator of the training dataset draws the next seed of its shuffles
(``reshuffle_each_iteration``), and Keras' ``fit`` opens :data:`ITERATORS_PER_EPOCH` of them
an epoch. Opening (never reading) as many before the first ``fit`` of a resumed process puts
the next epoch on the uninterrupted run's order (tests/test_resume.py checks it batch by
batch). Keras' ``BackupAndRestore`` restores the epoch number only, hence this module.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from cnnpipe.core import layout
from cnnpipe.core.io import atomic_path, write_json

RESUME_ROOT = Path(".cnnpipe/resume")
# Keras 3.15's epoch iterator opens one iterator when an epoch starts and another when it
# ends (discarded unread); under a strategy's scope it also opens one per fit to build.
ITERATORS_PER_EPOCH = 2
STATE_FILE = "state.json"


def code_version() -> str:
    """A digest of the package's and the train stage's source: other code, other weights."""
    import cnnpipe

    digest = hashlib.sha256()
    sources = sorted(Path(cnnpipe.__file__).parent.rglob("*.py")) + [Path("stages/train.py")]
    for path in sources:
        if path.is_file():
            digest.update(path.as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def run_fingerprint(variant: str) -> str:
    """What a saved state must have been trained with to be resumed: the resolved settings'
    bytes, the prepared train/val files' sizes and modification times, the preprocessing
    settings' bytes and the code's version."""
    digest = hashlib.sha256()
    for path in (layout.resolved_train(variant), layout.PREPROCESSING):
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    for split in ("train", "val"):
        for path in sorted(layout.split_dir(split).rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(code_version().encode())
    return digest.hexdigest()


def _tracked(variables) -> dict:
    """Variables by position, as ``tf.train.Checkpoint`` tracks them. Not by path: Keras
    numbers SeedGenerators process-wide, so their paths differ in a new process. A state is
    saved and restored in the same phase, whose model lists its variables (trainable ones
    first) and whose optimizer builds its slots in the same order."""
    return {f"v{index:04d}": variable for index, variable in enumerate(variables)}


class ResumeStore:
    """The saved state of one variant's interrupted run (``state`` is None when there is none)."""

    def __init__(self, variant: str, fingerprint: str, root: Path = RESUME_ROOT, log=print):
        self.variant, self.fingerprint = variant, fingerprint
        self.directory = Path(root) / variant
        self.log = log
        self.state = self._read_state()
        self.replayed = False

    def _read_state(self) -> dict | None:
        path = self.directory / STATE_FILE
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        if state.get("fingerprint") != self.fingerprint:
            self.log(f"train@{self.variant}: discarding the saved state in {self.directory}: "
                     "its settings, data or code differ from this run's")
            self.remove()
            return None
        return state

    def announce(self) -> None:
        if self.state:
            self.log(f"resuming train@{self.variant} at epoch {len(self.state['phases']) + 1} "
                     f"(phase {self.state['phase']}) from {self.directory}")

    def save(self, model, state: dict, best_weights=None) -> None:
        """Checkpoint ``model`` (and its optimizer), then record ``state`` pointing at it: a
        kill between the two leaves the previous, still complete, pair."""
        import tensorflow as tf

        number = len(state["phases"]) * 10 + len(state["completed"])
        manager = tf.train.CheckpointManager(
            self._checkpoint(model), self.directory / "checkpoints", max_to_keep=2
        )
        state = {**state, "fingerprint": self.fingerprint,
                 "checkpoint": manager.save(checkpoint_number=number), "best_weights": None}
        if best_weights is not None:
            best = self.directory / f"best-{number}.npz"
            with atomic_path(best, suffix=".npz") as tmp:
                np.savez(tmp, *best_weights)
            state["best_weights"] = best.name
        write_json(self.directory / STATE_FILE, state)
        for old in self.directory.glob("best-*.npz"):
            if old.name != state["best_weights"]:
                old.unlink()
        self.state = state

    def restore(self, model, *, optimizer: bool) -> None:
        """The saved variables into ``model`` (and, for a phase that goes on, its optimizer,
        which is built first so that every slot exists to receive them)."""
        if optimizer:
            model.optimizer.build(model.trainable_variables)
        checkpoint = self._checkpoint(model, with_optimizer=optimizer)
        checkpoint.restore(self.state["checkpoint"]).expect_partial().assert_existing_objects_matched()

    def best_weights(self):
        name = self.state.get("best_weights")
        if not name:
            return None
        with np.load(self.directory / name) as saved:
            return [saved[f"arr_{index}"] for index in range(len(saved.files))]

    def replay_shuffle(self, train_ds, epochs_done: int) -> None:
        """Once per process, before its first ``fit``: advance the dataset's shuffle seeds
        past the epochs already run."""
        if self.replayed:
            return
        self.replayed = True
        for _ in range(ITERATORS_PER_EPOCH * epochs_done):
            iter(train_ds)

    def _checkpoint(self, model, with_optimizer: bool = True):
        import tensorflow as tf

        parts = {"model": _tracked(model.variables)}
        if with_optimizer and model.optimizer is not None:
            parts["optimizer"] = _tracked(model.optimizer.variables)
        return tf.train.Checkpoint(**parts)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.state = None


def epoch_checkpoint(store: ResumeStore, phase: str, early_stopping, before: dict, resumed):
    """The Keras callback that saves the state after every epoch of ``phase``: ``before`` is
    the history and phases of earlier epochs; ``resumed`` the saved state this fit goes on
    from (its EarlyStopping counters are put back once ``fit`` has reset them), or None."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if resumed and early_stopping is not None:
                saved = resumed["early_stopping"]
                for key in ("wait", "stopped_epoch", "best", "best_epoch"):
                    setattr(early_stopping, key, saved[key])
                early_stopping.best_weights = store.best_weights()

        def on_epoch_end(self, epoch, logs=None):
            history = {key: list(values) for key, values in before["history"].items()}
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))
            before["history"], before["phases"] = history, before["phases"] + [phase]
            state = {"phase": phase, "completed": before["completed"], "history": history,
                     "phases": before["phases"], "stopped": bool(self.model.stop_training),
                     "early_stopping": _early_stopping_counters(early_stopping)}
            best = early_stopping.best_weights if early_stopping is not None else None
            store.save(self.model, state, best)

    return EpochCheckpoint()


def _early_stopping_counters(early_stopping) -> dict | None:
    if early_stopping is None:
        return None
    best = early_stopping.best
    return {"wait": early_stopping.wait, "stopped_epoch": early_stopping.stopped_epoch,
            "best": None if best is None else float(best), "best_epoch": early_stopping.best_epoch}
