"""Build a throw-away copy of this repository with tiny params, for end-to-end DVC runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Few images and one epoch: the point is that every stage runs and writes what it declares.
# The small-data rules would stretch 400 images to dozens of epochs at batch 16; off here.
TINY_DATA = {"train_limit": 400, "test_limit": 200}
TINY_TRAIN = {"epochs": 1, "batch_size": 64, "min_steps_per_epoch": 0, "min_images_seen": 0}


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }


# Generous: a loaded machine runs a tiny pipeline several times slower than an idle one, and a
# test should fail for what the code did, not for how busy the machine was.
SUBPROCESS_TIMEOUT = 1800


def run(cwd: Path, *args: str, check: bool = True,
        timeout: int = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(
            list(args), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as hung:
        tail = (hung.stdout or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise AssertionError(f"{' '.join(args)} still running after {timeout} s in {cwd}; "
                             f"its last output:\n{tail}") from None
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def dvc(cwd: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(cwd, str(VENV_BIN / "dvc"), *args, **kwargs)


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    return [name for name in listed if name and (ROOT / name).is_file()]


def write_tiny_params(dest: Path, models: dict[str, dict]) -> None:
    """Shrink ``dest/params.yaml``: few images, one epoch, only ``models``, no exports."""
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"].update(TINY_DATA)
    params["train"].update(TINY_TRAIN)
    params["models"] = models
    # The default export variant is not among the tiny ones; tests that export set their own.
    params["export"]["variants"] = []
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_code(dest: Path, keep: tuple[str, ...] = ()) -> None:
    """The working tree's files into ``dest``, but for outputs, the lock and ``keep``."""
    skip_prefixes = ("data/", "metrics/", "plots/", "dvclive/", "models/", "reports/")
    for name in tracked_files():
        if name in ("dvc.lock", *keep) or name.startswith(skip_prefixes):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def make_tiny_repo(dest: Path, models: dict[str, dict]) -> Path:
    """Copy the code (no outputs, no lock) into ``dest`` as a fresh git repo with tiny params."""
    copy_code(dest)
    write_tiny_params(dest, models)
    run(dest, "git", "init", "-q")
    run(dest, "git", "add", "-A")
    # DVCLive refuses to run in a repository without a commit.
    run(dest, "git", "commit", "-qm", "tiny pipeline")
    return dest


# The smallest useful pipeline: one narrow variant (tests of DVC bookkeeping, not of models).
ONE_TINY_VARIANT = {
    "simple_cnn": {"architecture": "simple_cnn", "filters": [4, 8, 8], "dense_units": 8},
}
_BASELINES: dict[str, Path] = {}


def committed_tiny_repo(tmp_path_factory, models: dict[str, dict], name: str = "tiny") -> Path:
    """A fresh copy of a tiny repo on which ``dvc repro`` ran, results committed (``HEAD``).

    The first call for a set of models pays for the run; later calls in the same pytest
    process (any test module) only copy it, so modules that each need a reproduced baseline
    to change do not each train it again.
    """
    key = json.dumps(models, sort_keys=True)
    if key not in _BASELINES:
        base = make_tiny_repo(tmp_path_factory.mktemp("baseline"), models)
        dvc(base, "repro")
        run(base, "git", "add", "-A")
        run(base, "git", "commit", "-qm", "baseline results")
        _BASELINES[key] = base
    dest = tmp_path_factory.mktemp(name) / "repo"
    shutil.copytree(_BASELINES[key], dest, symlinks=True)
    return dest


def reproduced_folder_repo(dest: Path, models: dict[str, dict], folder_kwargs: dict,
                           image_size: list[int] | None = None) -> Path:
    """A copy of the code with params.yaml's own `train:` and `data:` sections, a folder of
    scikit-learn's digits (``write_digits_folder(**folder_kwargs)``) as its image source, and
    `dvc repro` run on it: how the defaults fare on a small real folder."""
    from fixtures import write_digits_folder

    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    path = make_tiny_repo(dest, models)
    write_digits_folder(path / "data/images", **folder_kwargs)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["train"], params["data"] = defaults["train"], defaults["data"]
    params["data"].update({"source": "image_folder", "input": "data/images"})
    if image_size is not None:
        params["data"]["images"]["image_size"] = image_size
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "digits")
    dvc(path, "repro", timeout=3600)
    return path
