"""What a git revision holds, for the report: the base commit, and the files of it that are not
DVC metrics (the training records, the stored per-image predictions)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

from cnnpipe.core.errors import CnnpipeError, DataError
from cnnpipe.core.layout import predictions_file
from cnnpipe.evaluate.outputs import read_predictions


class ReportError(CnnpipeError):
    """A DVC or git command the report needs failed, or the output cannot be written."""


def resolve_base(repo: Path, base: str | None) -> tuple[str, str]:
    """(revision, its short commit id). No ``base``: ``main`` if it exists, else ``HEAD``."""
    candidates = [base] if base else ["main", "HEAD"]
    for rev in candidates:
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "--short", f"{rev}^{{commit}}"],
            cwd=repo, capture_output=True, text=True,
        )
        if done.returncode == 0:
            return rev, done.stdout.strip()
    if base:
        raise ReportError(f"`{base}` is not a commit in {repo} (a shallow clone? fetch it first)")
    raise ReportError(f"{repo} has no commit to compare with; commit once first")


def git_bytes(repo: Path, rev: str, path: str) -> bytes | None:
    """A file's content at ``rev``; None when the revision does not have it."""
    done = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True)
    return done.stdout if done.returncode == 0 else None


def git_files(repo: Path, rev: str, folder: str) -> list[str]:
    done = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{folder}"], cwd=repo,
                          capture_output=True, text=True)
    return done.stdout.split() if done.returncode == 0 else []


def _flatten(record, prefix: str = "") -> dict:
    """Nested JSON -> ``{"a.b": leaf}`` for numbers and strings, as DVC flattens metrics."""
    flat = {}
    if isinstance(record, dict):
        for key, value in record.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(record, (int, float, str)):
        flat[prefix[:-1]] = record
    return flat


def training_diff(repo: Path, rev: str) -> dict:
    """``metrics/train/<variant>.json`` at ``rev`` against the workspace, in the shape of
    ``dvc metrics diff --all --json``. These files are not DVC metrics (their environment
    strings and timings would drown the headline numbers there), but the report still says
    when the training environment changed and how long training took."""
    folder = "metrics/train"
    names = set(git_files(repo, rev, folder))
    names |= {path.name for path in (repo / folder).glob("*.json")}
    diff = {}
    for name in sorted(n for n in names if n.endswith(".json")):
        path = f"{folder}/{name}"
        old_bytes = git_bytes(repo, rev, path)
        try:
            old = _flatten(json.loads(old_bytes)) if old_bytes else {}
            new = _flatten(json.loads((repo / path).read_text())) if (repo / path).is_file() else {}
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            continue  # an unreadable record loses its rows, not the report
        diff[path] = {key: {"old": old.get(key), "new": new.get(key)}
                      for key in sorted(old.keys() | new.keys())}
    return diff


def stored_predictions(repo: Path, rev: str, variants) -> dict:
    """Per variant: (base, workspace) predictions, each ``(labels, predicted)`` or None."""
    found = {}
    for variant in variants:
        path = predictions_file(variant).as_posix()
        sides = []
        for content in (git_bytes(repo, rev, path),
                        (repo / path).read_bytes() if (repo / path).is_file() else None):
            try:
                sides.append(read_predictions(io.BytesIO(content)) if content else None)
            except DataError:
                sides.append(None)
        found[variant] = tuple(sides)
    return found
