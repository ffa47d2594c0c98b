"""The plots whose data or image changed between two revisions, rendered to PNG (vl-convert for
Vega-Lite specs, no browser)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cnnpipe.report.dvc_reading import WORKSPACE


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
