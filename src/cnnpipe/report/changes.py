"""DVC's params and metrics diffs as rows: which params changed, and each variant's headline
metrics with old, new and delta."""

from __future__ import annotations

import re

# (metric, files it is read from, in order of preference, how it is formatted)
KEY_METRICS = (
    ("accuracy", ("eval",), "{:.4f}"),
    ("macro_f1", ("eval",), "{:.4f}"),
    ("loss", ("eval",), "{:.4f}"),
    ("ece", ("eval",), "{:.4f}"),
    ("total_params", ("eval", "train"), "{:,.0f}"),
    ("train_seconds", ("train",), "{:.1f}"),
)
# metrics/<variant>.json (evaluation) and metrics/train/<variant>.json (training)
METRICS_FILE = re.compile(r"(?:^|/)metrics/(?:(?P<train>train)/)?(?P<variant>[^/]+)\.json$")


def changed_params(params_diff: dict) -> list[dict]:
    """One row per changed param: file, name, old, new (``None`` where absent)."""
    rows = []
    for file, entries in params_diff.items():
        for name, change in entries.items():
            old, new = change.get("old"), change.get("new")
            if old != new:
                rows.append({"file": file, "param": name, "old": old, "new": new})
    return rows


def _delta(old, new) -> float | None:
    if isinstance(old, bool) or isinstance(new, bool):
        return None
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return new - old
    return None


def variant_metrics(metrics_diff: dict) -> dict[str, dict]:
    """Per variant: key-metric rows, other changed metrics and environment changes.

    Returns ``{variant: {"rows": [...], "other_changed": [...], "environment": [...],
    "status": "changed" | "new" | "removed"}}``; a row is ``{metric, old, new, delta, status}``
    with ``status`` one of ``same``, ``changed``, ``new``, ``removed``, ``missing``.
    """
    files: dict[str, dict[str, dict]] = {}
    for path, entries in metrics_diff.items():
        match = METRICS_FILE.search(path.replace("\\", "/"))
        if match:
            kind = "train" if match["train"] else "eval"
            files.setdefault(match["variant"], {})[kind] = entries
    result = {}
    for variant in sorted(files):
        sources = files[variant]
        rows = []
        for metric, kinds, _ in KEY_METRICS:
            change = next((sources[k][metric] for k in kinds if metric in sources.get(k, {})), None)
            if change is None:
                continue
            old, new = change.get("old"), change.get("new")
            rows.append({"metric": metric, "old": old, "new": new, "delta": _delta(old, new),
                         "status": _status(old, new)})
        keys = {metric for metric, _, _ in KEY_METRICS}
        other, environment = [], []
        for kind in sorted(sources):
            for name, change in sorted(sources[kind].items()):
                old, new = change.get("old"), change.get("new")
                if name in keys or old == new:
                    continue
                if name.startswith("environment."):
                    if old is not None and new is not None:  # absent: a new/removed variant
                        environment.append({"key": name.split(".", 1)[1], "old": old, "new": new})
                elif old is None or new is None:
                    continue  # a key moved to the detail files (or new there): not a change
                elif name not in ("train_images_per_second",):  # timing noise, not a result
                    other.append(name)
        everything = [c for kind in sources.values() for c in kind.values()]
        if everything and all(c.get("old") is None for c in everything):
            status = "new"
        elif everything and all(c.get("new") is None for c in everything):
            status = "removed"
        else:
            status = "changed"
        result[variant] = {"rows": rows, "other_changed": other, "environment": environment,
                           "status": status}
    return result


def _status(old, new) -> str:
    if old is None and new is None:
        return "missing"
    if old is None:
        return "new"
    if new is None:
        return "removed"
    return "same" if old == new else "changed"
