"""Running DVC's three diffs against a base revision and reading their JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cnnpipe.report.changes import METRICS_FILE
from cnnpipe.report.revisions import ReportError, resolve_base, stored_predictions, training_diff

WORKSPACE = "workspace"  # the name DVC gives the working tree in diffs and plot data


def find_dvc() -> str:
    """The ``dvc`` installed beside this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / ("dvc.exe" if os.name == "nt" else "dvc")
    if beside.is_file():
        return str(beside)
    found = shutil.which("dvc")
    if found is None:
        raise ReportError("dvc not found beside this Python or on PATH; run `make setup` first")
    return found


def _run(repo: Path, args: list[str]) -> str:
    try:
        done = subprocess.run(args, cwd=repo, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as exc:
        raise ReportError(f"cannot run {args[0]}: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        command = " ".join([Path(args[0]).name, *args[1:]])
        raise ReportError(
            f"`{command}` failed ({done.returncode}): {detail[-1] if detail else 'no output'}"
        )
    return done.stdout


def _parse_json(text: str, what: str):
    text = text.strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        start = text.find("{")  # tolerate a stray line before the JSON
        try:
            return json.loads(text[start:]) if start >= 0 else {}
        except json.JSONDecodeError:
            raise ReportError(f"{what} did not print JSON: {text[:200]!r}") from None


@dataclass
class Collected:
    """DVC's view of base vs workspace, plus the rendered plot images' source folder."""

    base: str
    commit: str
    params: dict
    metrics: dict
    plots: dict
    plot_errors: list = field(default_factory=list)
    # variant -> ((labels, predicted) in the base or None, the same in the workspace or None)
    predictions: dict = field(default_factory=dict)


def collect(repo: Path, base: str | None, image_dir: Path, dvc: str | None = None) -> Collected:
    """Run the three ``dvc ... diff`` commands; image plots are written under ``image_dir``."""
    dvc = dvc or find_dvc()
    rev, commit = resolve_base(repo, base)
    params = _parse_json(_run(repo, [dvc, "params", "diff", rev, "--json"]),
                         "dvc params diff")
    metrics = _parse_json(_run(repo, [dvc, "metrics", "diff", rev, "--all", "--json"]),
                          "dvc metrics diff")
    plots = _parse_json(
        _run(repo, [dvc, "plots", "diff", rev, "--json", "-o", str(image_dir)]), "dvc plots diff"
    )
    metrics.update(training_diff(repo, rev))
    variants = sorted({m["variant"] for m in map(METRICS_FILE.search, metrics) if m})
    return Collected(rev, commit, params, metrics, plots.get("data", {}), plots.get("errors", []),
                     predictions=stored_predictions(repo, rev, variants))
