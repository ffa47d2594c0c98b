"""Acceptance: train@<variant> SIGKILLed after epoch 2 of 4 resumes at epoch 3 on the next
`dvc repro` and ends with the uninterrupted run's weights, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from pipeline_repo import ONE_TINY_VARIANT, VENV_BIN, dvc, env, make_tiny_repo

VARIANT = "simple_cnn"
STAGE = f"train@{VARIANT}"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_after_epoch(repo, epochs_done: int) -> list[str]:
    """Run `dvc repro STAGE` in its own process group and SIGKILL the group once the saved
    state says ``epochs_done`` epochs completed; the phases the state then holds."""
    state = repo / ".cnnpipe" / "resume" / VARIANT / "state.json"
    process = subprocess.Popen([str(VENV_BIN / "dvc"), "repro", STAGE], cwd=repo, env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        while process.poll() is None:
            if state.is_file() and len(json.loads(state.read_text())["phases"]) >= epochs_done:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the training ended before it could be killed"
    return json.loads(state.read_text())["phases"]


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_weights(tmp_path):
    repo = make_tiny_repo(tmp_path / "repo", ONE_TINY_VARIANT)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update({"epochs": 4, "early_stopping_patience": 10})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    phases = kill_after_epoch(repo, 2)
    resumed = dvc(repo, "repro", STAGE).stdout
    assert f"resuming {STAGE} at epoch {len(phases) + 1} (phase head)" in resumed
    assert len(phases) == 2, f"killed after epoch {len(phases)}, not 2"
    weights = repo / "models" / VARIANT / "model.weights.h5"
    resumed_digest = digest(weights)
    assert not (repo / ".cnnpipe" / "resume" / VARIANT).exists()
    curves = (repo / "plots" / "curves").rglob("*.csv")
    resumed_curves = {path: path.read_text() for path in curves}
    record = json.loads((repo / "metrics" / "train" / f"{VARIANT}.json").read_text())
    assert record["epochs_run"] == 4 and len(resumed_curves) == 2

    uninterrupted = dvc(repo, "repro", "-f", "-s", STAGE).stdout
    assert "resuming" not in uninterrupted
    assert digest(weights) == resumed_digest
    assert {path: path.read_text() for path in resumed_curves} == resumed_curves
    assert not (repo / ".cnnpipe" / "resume" / VARIANT).exists()
