"""``cnnpipe report``: what changed between a git revision and the workspace, as Markdown.

The report holds the changed params (``dvc params diff``), the headline metrics of every
variant that changed, with old, new and delta (``dvc metrics diff``, plus the training
record ``metrics/train/<variant>.json``, which is not a DVC metric), whether each accuracy
change is more than noise (McNemar's exact test on the per-image predictions that evaluate
stores in ``reports/predictions/``, with a 95% interval for the paired difference), the
workspace's leaderboard and transfer table, and PNG renderings of the plots whose data
changed (``dvc plots diff --json``; Vega-Lite specs are rendered with vl-convert, no browser). Images go to a folder beside the report
(``report.md`` -> ``report_assets/``) and are linked relatively, so the pair can be uploaded
as a CI artifact or opened from a checkout.

The parsing and rendering functions take DVC's JSON and return plain data or text, so they
are tested without running DVC; only ``collect`` and ``write_report`` touch the outside world.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cnnpipe.core.errors import CnnpipeError, DataError
from cnnpipe.core.layout import predictions_file
from cnnpipe.evaluate.outputs import read_predictions

WORKSPACE = "workspace"  # the name DVC gives the working tree in diffs and plot data
MAX_PLOTS = 12  # a report with more images than this is scrolled past, not read
ASSETS_MARKER = ".cnnpipe-report"  # marks an assets folder this module may replace

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
ALPHA = 0.05  # a change with a larger p-value is reported as within noise
_METRICS_FILE = re.compile(r"(?:^|/)metrics/(?:(?P<train>train)/)?(?P<variant>[^/]+)\.json$")


class ReportError(CnnpipeError):
    """A DVC or git command the report needs failed, or the output cannot be written."""


# --- running DVC --------------------------------------------------------------------------


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


def _git_bytes(repo: Path, rev: str, path: str) -> bytes | None:
    """A file's content at ``rev``; None when the revision does not have it."""
    done = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True)
    return done.stdout if done.returncode == 0 else None


def _git_files(repo: Path, rev: str, folder: str) -> list[str]:
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
    names = set(_git_files(repo, rev, folder))
    names |= {path.name for path in (repo / folder).glob("*.json")}
    diff = {}
    for name in sorted(n for n in names if n.endswith(".json")):
        path = f"{folder}/{name}"
        old_bytes = _git_bytes(repo, rev, path)
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
        for content in (_git_bytes(repo, rev, path),
                        (repo / path).read_bytes() if (repo / path).is_file() else None):
            try:
                sides.append(read_predictions(io.BytesIO(content)) if content else None)
            except DataError:
                sides.append(None)
        found[variant] = tuple(sides)
    return found


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
    variants = sorted({m["variant"] for m in map(_METRICS_FILE.search, metrics) if m})
    return Collected(rev, commit, params, metrics, plots.get("data", {}), plots.get("errors", []),
                     predictions=stored_predictions(repo, rev, variants))


# --- is the change real? ------------------------------------------------------------------


def paired_accuracy_change(base, workspace, confidence: float = 0.95) -> dict:
    """Accuracy change between two models' predictions on the same test images.

    ``base`` and ``workspace`` are ``(labels, predicted)``. The p-value is McNemar's exact
    test: of the images exactly one model gets right, is the split between "now right" and
    "now wrong" more lopsided than a fair coin would make it? The interval is the Wald
    interval of a paired difference of proportions, which uses the same discordant counts.
    Raises ValueError when the labels differ (not the same test set: no pairing).
    """
    from scipy.stats import binomtest, norm

    (old_labels, old_predicted), (new_labels, new_predicted) = base, workspace
    if len(old_labels) != len(new_labels) or not (old_labels == new_labels).all():
        raise ValueError("the test sets differ (other images or another order)")
    n = len(new_labels)
    if n == 0:
        raise ValueError("no test images")
    old_right = old_predicted == old_labels
    new_right = new_predicted == new_labels
    now_right = int((new_right & ~old_right).sum())
    now_wrong = int((old_right & ~new_right).sum())
    discordant = now_right + now_wrong
    delta = (now_right - now_wrong) / n
    spread = math.sqrt(max(discordant / n - delta * delta, 0.0) / n)
    z = float(norm.ppf(0.5 + confidence / 2))
    p_value = binomtest(min(now_right, now_wrong), discordant, 0.5).pvalue if discordant else 1.0
    return {
        "images": n, "old": float(old_right.mean()), "new": float(new_right.mean()),
        "delta": delta, "low": delta - z * spread, "high": delta + z * spread,
        "now_right": now_right, "now_wrong": now_wrong,
        "changed_predictions": int((old_predicted != new_predicted).sum()),
        "p_value": float(p_value), "real": bool(p_value < ALPHA),
    }


def significance(predictions: dict) -> dict[str, dict]:
    """Per variant: ``{"status": ...}`` with ``status`` one of ``compared`` (with the
    :func:`paired_accuracy_change` fields), ``identical`` (every prediction the same),
    ``no_base`` (the base stored no predictions), ``no_workspace``, ``unpaired`` (with
    ``reason``)."""
    result = {}
    for variant, (base, workspace) in predictions.items():
        if workspace is None:
            result[variant] = {"status": "no_workspace"}
        elif base is None:
            result[variant] = {"status": "no_base"}
        else:
            try:
                change = paired_accuracy_change(base, workspace)
            except ValueError as exc:
                result[variant] = {"status": "unpaired", "reason": str(exc)}
                continue
            status = "identical" if change["changed_predictions"] == 0 else "compared"
            result[variant] = {"status": status, **change}
    return result


def unchanged_variants(variants: dict[str, dict], tests: dict[str, dict]) -> list[str]:
    """Variants with nothing to report: predictions identical where both revisions stored
    them, else every headline metric equal."""
    same = []
    for variant, info in variants.items():
        if info["status"] != "changed":
            continue
        test = tests.get(variant, {"status": "no_base"})
        headline_same = all(row["status"] == "same" for row in info["rows"]
                            if row["metric"] != "train_seconds")
        if test["status"] == "identical" or (test["status"] != "compared" and headline_same):
            same.append(variant)
    return same


# --- params and metrics -------------------------------------------------------------------


def _show(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


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
        match = _METRICS_FILE.search(path.replace("\\", "/"))
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


def _fmt(value, pattern: str) -> str:
    if value is None:
        return "n/a"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def _fmt_delta(value, pattern: str) -> str:
    if value is None:
        return ""
    text = _fmt(value, pattern)
    return text if text.startswith("-") else "+" + text


# --- plots --------------------------------------------------------------------------------


@dataclass
class PlotChange:
    plot_id: str
    kind: str  # "vega" or "image"
    status: str  # "changed", "new", "removed"
    spec: dict | None = None  # vega: the Vega-Lite spec holding both revisions
    images: dict[str, str] = field(default_factory=dict)  # image: revision -> file


def _fields(spec) -> set[str]:
    """Every ``"field"`` a spec encodes (its data excluded): what the picture shows."""
    found: set[str] = set()
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "data":
                continue
            if key == "field" and isinstance(value, str):
                found.add(value)
            else:
                found |= _fields(value)
    elif isinstance(spec, list):
        for item in spec:
            found |= _fields(item)
    return found


def vega_rows_by_side(spec: dict) -> tuple[list[str], list[str]]:
    """(base rows, workspace rows) of a DVC Vega-Lite spec, each row reduced to the fields
    the plot draws and serialized, sorted: equal lists mean an identical picture.

    Only drawn fields count: the leaderboard rows behind "Accuracy vs parameters" also hold
    training time, which changes every run without changing that plot.
    """
    values = (spec.get("data") or {}).get("values") or []
    drawn = _fields(spec) - {"rev"}
    sides: tuple[list[str], list[str]] = ([], [])
    for row in values:
        if not isinstance(row, dict):
            continue
        shown = drawn & row.keys() or row.keys() - {"rev"}  # unknown template: every field
        keep = {k: v for k, v in row.items() if k in shown}
        sides[row.get("rev") == WORKSPACE].append(json.dumps(keep, sort_keys=True, default=str))
    return sorted(sides[0]), sorted(sides[1])


def _file_digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def changed_plots(plots_data: dict) -> list[PlotChange]:
    """The plots whose data (vega) or image bytes differ between the base and the workspace,
    in DVC's order, data plots before image plots."""
    vega, images = [], []
    for plot_id, entries in plots_data.items():
        for entry in entries or []:
            if entry.get("type") == "vega" and isinstance(entry.get("content"), dict):
                base, work = vega_rows_by_side(entry["content"])
                if base != work:
                    status = "new" if not base else "removed" if not work else "changed"
                    vega.append(PlotChange(plot_id, "vega", status, spec=entry["content"]))
        files = {}
        for entry in entries or []:
            if entry.get("type") == "image" and entry.get("url"):
                for rev in entry.get("revisions") or []:
                    files[rev] = entry["url"]
        if files:
            work = files.get(WORKSPACE)
            base = next((path for rev, path in files.items() if rev != WORKSPACE), None)
            if work is None:
                images.append(PlotChange(plot_id, "image", "removed", images=files))
            elif base is None:
                images.append(PlotChange(plot_id, "image", "new", images=files))
            elif _file_digest(work) != _file_digest(base):
                images.append(PlotChange(plot_id, "image", "changed", images=files))
    return vega + images


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80] or "plot"


def render_plots(changes: list[PlotChange], assets: Path, base: str) -> list[dict]:
    """Write one PNG per vega plot, and the two revisions' files per image plot, into
    ``assets``; returns ``[{change, files: [(label, filename)], error}]``."""
    rendered = []
    for number, change in enumerate(changes, start=1):
        stem = f"{number:02d}-{_slug(change.plot_id)}"
        files, error = [], None
        if change.kind == "vega":
            try:
                import vl_convert

                png = vl_convert.vegalite_to_png(change.spec, scale=1)
                (assets / f"{stem}.png").write_bytes(png)
                files.append(("", f"{stem}.png"))
            except Exception as exc:  # one bad spec must not lose the rest of the report
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            for rev, label in ((base, "base"), (WORKSPACE, "workspace")):
                source = next((p for r, p in change.images.items()
                               if (r == WORKSPACE) == (rev == WORKSPACE)), None)
                if source and Path(source).is_file():
                    name = f"{stem}-{label}{Path(source).suffix or '.png'}"
                    shutil.copyfile(source, assets / name)
                    files.append((rev, name))
        rendered.append({"change": change, "files": files, "error": error})
    return rendered


# --- Markdown -----------------------------------------------------------------------------


def _read_optional(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    return text.strip() or None


def render_markdown(
    collected: Collected,
    variants: dict[str, dict],
    params: list[dict],
    rendered: list[dict],
    omitted: int,
    assets_name: str,
    leaderboard: str | None,
    transfer: str | None,
    tests: dict[str, dict] | None = None,
) -> str:
    base = collected.base
    out = [
        f"# Pipeline report: workspace vs `{base}`",
        "",
        f"Base revision `{base}` (commit `{collected.commit}`); \"new\" is the working tree. "
        "Generated by `cnnpipe report` from `dvc params diff`, `dvc metrics diff` and "
        "`dvc plots diff`.",
        "",
        "## Changed parameters",
        "",
    ]
    if params:
        out += ["| file | parameter | old | new |", "|---|---|---|---|"]
        for row in params:
            old = "(absent)" if row["old"] is None else f"`{_show(row['old'])}`"
            new = "(removed)" if row["new"] is None else f"`{_show(row['new'])}`"
            out.append(f"| {row['file']} | `{row['param']}` | {old} | {new} |")
    else:
        out.append("No parameter changed.")

    tests = tests or {}
    unchanged = unchanged_variants(variants, tests)
    shown = {v: info for v, info in variants.items() if v not in unchanged}
    out += ["", "## Is the change real?", ""]
    out += _significance_section(shown, tests, base)

    out += ["", "## Metrics", ""]
    if not variants:
        out.append(f"No metrics in `{base}` or in the workspace (run `dvc repro`).")
    if unchanged:
        out += [f"Unchanged (same predictions or same metrics as `{base}`, not listed): "
                + ", ".join(unchanged) + ".", ""]
    for variant, info in shown.items():
        note = {"new": " (new: no metrics in the base revision)",
                "removed": " (removed: no metrics in the workspace)"}.get(info["status"], "")
        out += [f"### {variant}{note}", ""]
        if info["rows"]:
            out += [f"| metric | old (`{base}`) | new | delta |", "|---|---:|---:|---:|"]
            patterns = {metric: pattern for metric, _, pattern in KEY_METRICS}
            for row in info["rows"]:
                pattern = patterns[row["metric"]]
                old = "(new)" if row["status"] == "new" else _fmt(row["old"], pattern)
                new = "(removed)" if row["status"] == "removed" else _fmt(row["new"], pattern)
                out.append(f"| {row['metric']} | {old} | {new} | "
                           f"{_fmt_delta(row['delta'], pattern)} |")
        else:
            out.append("No key metrics recorded.")
        if info["other_changed"] and info["status"] == "changed":
            names = info["other_changed"]
            shown = ", ".join(f"`{n}`" for n in names[:8]) + (", ..." if len(names) > 8 else "")
            out += ["", f"{len(names)} other metrics changed: {shown} "
                        f"(see `dvc metrics diff {base}`)."]
        if info["environment"]:
            changes = "; ".join(f"{e['key']}: {_show(e['old'])} -> {_show(e['new'])}"
                                for e in info["environment"])
            out += ["", f"Training environment differs ({changes}): results may differ "
                        "for that reason alone."]
        out.append("")

    # Folded: every variant has a row there, changed or not; the sections above are the news.
    out += ["## Leaderboard (workspace)", "", "<details><summary>All variants</summary>", ""]
    out.append(leaderboard if leaderboard else
               "No `reports/leaderboard.md` in the workspace (run `dvc repro`).")
    out += ["", "</details>"]
    if transfer and len(transfer.splitlines()) > 2:  # header and rule only: nothing to show
        out += ["", "## Transfer learning (workspace)", "", transfer]

    out += ["", "## Changed plots", ""]
    if not rendered and not omitted:
        out.append("No plot data changed.")
    for item in rendered:
        change = item["change"]
        label = {"new": " (new)", "removed": " (removed)"}.get(change.status, "")
        out += [f"### {change.plot_id}{label}", ""]
        if item["error"]:
            out += [f"Could not render this plot: {item['error']}", ""]
        pairs = [(rev, name) for rev, name in item["files"] if rev]
        for rev, name in item["files"]:
            if not rev:  # one rendering holding both revisions
                out += [f"![{change.plot_id}]({assets_name}/{name})", ""]
        if pairs:  # an image per revision, side by side
            out.append("| " + " | ".join(f"`{rev}`" for rev, _ in pairs) + " |")
            out.append("|" + "---|" * len(pairs))
            out.append("| " + " | ".join(f"![{change.plot_id} ({rev})]({assets_name}/{name})"
                                         for rev, name in pairs) + " |")
            out.append("")
    if omitted:
        out += ["", f"{omitted} more changed plots not shown; `dvc plots diff {base}` "
                    "draws them all."]
    by_rev: dict[str, set[str]] = {}
    for error in collected.plot_errors:
        by_rev.setdefault(str(error.get("rev", "?")), set()).add(str(error.get("name", "?")))
    for rev, names in sorted(by_rev.items()):
        missing = sorted(names)
        out += ["", f"No data in `{rev}` for {len(missing)} plots: "
                    + ", ".join(f"`{m}`" for m in missing[:8])
                    + (", ..." if len(missing) > 8 else "") + "."]
    return "\n".join(out).rstrip() + "\n"


def _pct(value: float) -> str:
    return f"{value * 100:+.2f} pp"


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 0.001 else "< 0.001"


def _significance_section(variants: dict[str, dict], tests: dict[str, dict], base: str) -> list[str]:
    """One row per variant with something to report: accuracy delta, its 95% interval,
    McNemar's p-value and a verdict; variants without paired predictions get the delta only."""
    rows, notes = [], []
    for variant, info in variants.items():
        test = tests.get(variant, {"status": "no_base"})
        accuracy = next((r for r in info["rows"] if r["metric"] == "accuracy"), None)
        if test["status"] == "compared":
            verdict = ("**real change**" if test["real"] else
                       f"within noise (p >= {ALPHA})")
            rows.append(
                f"| {variant} | {test['old']:.4f} | {test['new']:.4f} | {_pct(test['delta'])} | "
                f"{_pct(test['low'])} to {_pct(test['high'])} | {_p(test['p_value'])} | "
                f"{test['now_right']} / {test['now_wrong']} | {verdict} |")
        elif accuracy is not None and accuracy["delta"] is not None:
            reason = {"no_base": f"`{base}` stored no predictions",
                      "no_workspace": "the workspace has no predictions (run `dvc repro`)",
                      "unpaired": test.get("reason", "")}.get(test["status"], "")
            rows.append(f"| {variant} | {accuracy['old']:.4f} | {accuracy['new']:.4f} | "
                        f"{_pct(accuracy['delta'])} | n/a | n/a | n/a | no test: {reason} |")
        elif info["status"] in ("new", "removed"):
            notes.append(f"{variant} is {info['status']}: nothing to compare.")
    if not rows and not notes:
        return ["No variant's results changed."]
    out = []
    if rows:
        out += [
            f"Test accuracy, `{base}` against the workspace, on the same test images. The "
            "interval is the 95% interval of the paired difference; p is McNemar's exact test "
            "on the images exactly one of the two models gets right (now right / now wrong). "
            f"A change with p >= {ALPHA} is within the noise of retraining or of the test set's "
            "size.",
            "",
            "| variant | old accuracy | new accuracy | delta | 95% interval | p | "
            "now right / now wrong | verdict |",
            "|---|---:|---:|---:|---|---:|---:|---|",
            *rows,
        ]
    if notes:
        out += ["", *notes] if rows else notes
    return out


# --- writing ------------------------------------------------------------------------------


def assets_dir_for(out: Path) -> Path:
    """``report.md`` -> ``report_assets`` beside it."""
    return out.with_name(f"{out.stem}_assets")


def _replace_assets(new: Path | None, target: Path) -> None:
    """Swap ``new`` in for ``target`` (None: just remove an old one we made)."""
    if target.exists():
        if not (target / ASSETS_MARKER).exists():
            raise ReportError(
                f"{target} exists and was not written by `cnnpipe report`; move it or choose "
                "another --out"
            )
        trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        os.replace(target, trash / "x")
        shutil.rmtree(trash, ignore_errors=True)
    if new is not None:
        os.replace(new, target)


def write_report(
    repo: Path, out: Path, base: str | None = None, max_plots: int = MAX_PLOTS,
    dvc: str | None = None,
) -> dict:
    """Collect, render and write ``out`` and its assets folder atomically; a summary dict."""
    repo, out = Path(repo).resolve(), Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    assets = assets_dir_for(out)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{assets.name}.new."))
    try:
        with tempfile.TemporaryDirectory() as dvc_images:
            collected = collect(repo, base, Path(dvc_images), dvc=dvc)
            changes = changed_plots(collected.plots)
            shown = changes[:max_plots]
            rendered = render_plots(shown, staging, collected.base)
        markdown = render_markdown(
            collected,
            variant_metrics(collected.metrics),
            changed_params(collected.params),
            rendered,
            omitted=len(changes) - len(shown),
            assets_name=assets.name,
            leaderboard=_read_optional(repo / "reports/leaderboard.md"),
            transfer=_read_optional(repo / "reports/transfer.md"),
            tests=significance(collected.predictions),
        )
        has_files = any(item["files"] for item in rendered)
        if has_files:
            (staging / ASSETS_MARKER).write_text("made by cnnpipe report; replaced on each run\n")
            os.chmod(staging, 0o755)
        _replace_assets(staging if has_files else None, assets)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(markdown)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "base": collected.base, "commit": collected.commit, "out": str(out),
        "assets": str(assets) if has_files else None,
        "changed_params": len(changed_params(collected.params)),
        "changed_plots": len(changes), "plots_shown": len(shown),
    }


# --- command line -------------------------------------------------------------------------

REPORT_DESCRIPTION = """\
Compare the workspace with a git revision and write a Markdown report: changed params; for
each variant whose predictions changed, the accuracy delta with a 95% interval and McNemar's
exact p-value on the same test images (marked "within noise" when p >= 0.05); the headline
metrics (accuracy, macro_f1, loss, ece, total_params, train_seconds) with old, new and
delta; the workspace's leaderboard and transfer table, and PNG images of the
plots whose data changed (at most --max-plots), saved in a folder beside the report
(report.md -> report_assets/). Run it in the repository after `dvc repro`."""


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="Markdown report of params, metrics and plots changed since a git revision",
        description=REPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(handler=run_report)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", metavar="REV",
                        help="git revision to compare with (default: main if it exists, else HEAD)")
    parser.add_argument("--out", default="report.md", metavar="FILE",
                        help="the Markdown file to write (default: %(default)s)")
    parser.add_argument("--repo", default=".", metavar="DIR",
                        help="the DVC repository (default: the current directory)")
    parser.add_argument("--max-plots", type=int, default=MAX_PLOTS, metavar="N",
                        help="render at most N changed plots (default: %(default)s)")


def run_report(args: argparse.Namespace) -> int:
    summary = write_report(Path(args.repo), Path(args.out), args.base, max(0, args.max_plots))
    print(f"wrote {summary['out']} (workspace vs {summary['base']} at {summary['commit']}: "
          f"{summary['changed_params']} params changed, {summary['changed_plots']} plots "
          f"changed, {summary['plots_shown']} shown)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnpipe.report", description=REPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_report(args)
    except CnnpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
