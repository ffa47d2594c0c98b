"""Consecutive training phases on one model (the head, then any fine-tuning), each one
``fit``, saving and resuming through a cnnpipe.train.resume.ResumeStore when given one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnpipe.train.training import TrainSettings, check_finite, compile_model, fit_phase


@dataclass
class Phases:
    """Consecutive ``fit`` phases on one model, their histories appended."""

    model: Any
    train_ds: Any
    val_ds: Any
    num_classes: int
    settings: TrainSettings
    steps_per_epoch: int
    callbacks: Any
    class_weight: dict[int, float] | None
    resume: Any = None
    history: dict[str, list[float]] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)

    def run(self, name: str, learning_rate: float, epochs: int, description: str) -> None:
        # Compiling (again) makes an unfreeze take effect; the schedule restarts per phase.
        compile_model(
            self.model, self.num_classes, learning_rate, self.settings,
            epochs=epochs, steps_per_epoch=self.steps_per_epoch,
        )
        saved = self.resume.state if self.resume is not None else None
        if saved and name in saved["completed"]:
            if saved["phase"] == name:  # else a later phase's state restores the weights
                self.resume.restore(self.model, optimizer=False)
            self._take_saved(saved)
            return
        resumed = saved if saved and saved["phase"] == name else None
        if resumed:
            self.resume.restore(self.model, optimizer=True)
            self._take_saved(resumed)
            epochs = 0 if resumed["stopped"] else epochs - self.phases.count(name)
        history = fit_phase(
            self.model, self.train_ds, self.val_ds, epochs, len(self.phases),
            self.settings["early_stopping_patience"], self.callbacks, self.class_weight,
            checkpoint=self._checkpoint(name, resumed),
        )
        check_finite(history, description, learning_rate)
        for key, values in history.items():
            self.history.setdefault(key, []).extend(values)
        self.phases += [name] * len(history.get("loss", []))
        if self.resume is not None:
            completed = (self.resume.state or {}).get("completed", []) + [name]
            self.resume.save(self.model, {"phase": name, "completed": completed,
                                          "history": self.history, "phases": self.phases,
                                          "stopped": True, "early_stopping": None})

    def _take_saved(self, saved) -> None:
        self.history = {key: list(values) for key, values in saved["history"].items()}
        self.phases = list(saved["phases"])

    def _checkpoint(self, name: str, resumed):
        """The per-epoch saving callback's maker for :func:`fit_phase`, after the shuffle
        is replayed past the epochs already run; None without a resume store."""
        if self.resume is None:
            return None
        from cnnpipe.train.resume import epoch_checkpoint

        self.resume.replay_shuffle(self.train_ds, len(self.phases))
        saved = self.resume.state or {}
        before = {"history": self.history, "phases": self.phases,
                  "completed": saved.get("completed", [])}
        return lambda stop: epoch_checkpoint(self.resume, name, stop, before, resumed)
