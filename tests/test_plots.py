"""The plots page: overlay tables from per-variant files, and the real dvc.yaml's plot
definitions drawn by `dvc plots show --json` and rendered by Vega (vl-convert, no browser)
on a repo holding only plot data for three variants."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnpipe.compare.overlays import confusion_count_rows, curve_rows, stacked_rows
from cnnpipe.core import layout
from cnnpipe.core.io import write_csv

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
VARIANTS = ("alpha_cnn", "beta_cnn", "gamma_cnn")
CLASSES = ("cat", "dog")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _per_variant_tables(root: Path) -> None:
    """What train@ and evaluate@ write for each variant, tiny."""
    for number, variant in enumerate(VARIANTS):
        for metric in ("accuracy", "loss"):
            write_csv(root / layout.curve_table(metric, variant), [
                {"epoch": epoch, "train": 0.5 + epoch / 10 + number / 100,
                 "validation": 0.4 + epoch / 10} for epoch in (1, 2, 3)])
        write_csv(root / layout.confusion_table(variant), [
            {"actual": "cat", "predicted": "cat"}, {"actual": "cat", "predicted": "dog"},
            {"actual": "dog", "predicted": "dog"}])
        write_csv(root / layout.plot_table("calibration", variant), [
            {"bin_center": 0.5, "confidence": 0.55, "accuracy": 0.5, "count": 3}])
        write_csv(root / layout.plot_table("roc", variant), [
            {"fpr": 0.0, "tpr": 0.0}, {"fpr": 1.0, "tpr": 1.0}])
        write_csv(root / layout.plot_table("precision_recall", variant), [
            {"recall": 0.0, "precision": 1.0}, {"recall": 1.0, "precision": 0.5}])


def test_overlay_tables_stack_every_variant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _per_variant_tables(tmp_path)
    curves = curve_rows(VARIANTS)
    assert len(curves) == 3 * 3 * 2  # variants x epochs x splits
    assert curves[1] == {"variant": "alpha_cnn", "epoch": 1, "split": "validation",
                         "accuracy": "0.5", "loss": "0.5"}
    confusion = confusion_count_rows(VARIANTS, CLASSES)
    cat_row = [r for r in confusion if r["variant"] == "beta_cnn" and r["actual"] == "cat"]
    assert [(r["predicted"], r["count"], r["share"]) for r in cat_row] == [
        ("cat", 1, 0.5), ("dog", 1, 0.5)]
    assert {r["variant"] for r in stacked_rows("roc", VARIANTS)} == set(VARIANTS)


@pytest.fixture(scope="module")
def plots_json(tmp_path_factory):
    """`dvc plots show --json` of the real plot definitions and templates."""
    repo = tmp_path_factory.mktemp("plots") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        _per_variant_tables(repo)
        out = Path("plots/compare")
        write_csv(out / "curves.csv", curve_rows(VARIANTS))
        for kind in layout.PLOT_KINDS:
            write_csv(out / f"{kind}.csv", stacked_rows(kind, VARIANTS))
        write_csv(out / "confusion.csv", confusion_count_rows(VARIANTS, CLASSES))
        write_csv(Path("reports/leaderboard.csv"), [
            {"variant": v, "accuracy": 0.8 + i / 100, "total_params": 1000 * (i + 1),
             "train_seconds": 10 * (i + 1)} for i, v in enumerate(VARIANTS)])
        write_csv(Path("plots/class_balance.csv"), [{"class": "cat", "split": "train", "count": 3}])
    finally:
        os.chdir(cwd)
    (repo / "plots/images/compare").mkdir(parents=True)
    (repo / "plots/images/compare/accuracy_vs_cost.png").write_bytes(PNG_MAGIC)
    for args in (["git", "init", "-q"], [DVC, "init", "-q"]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True)
    shutil.copytree(ROOT / ".dvc/plots", repo / ".dvc/plots", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.html"))
    done = subprocess.run([DVC, "plots", "show", "--json"], cwd=repo, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _vega(plots_json: dict) -> dict[str, dict]:
    return {plot_id: entries[0]["content"] for plot_id, entries in plots_json["data"].items()
            if entries and entries[0].get("type") == "vega"}


def test_each_chart_overlays_every_variant(plots_json):
    specs = _vega(plots_json)
    assert not plots_json.get("errors"), plots_json.get("errors")
    overlays = [p for p in specs if p != "plots/class_balance.csv"]
    assert len(overlays) == 8, list(specs)  # a page of a dozen charts, not one per file
    for plot_id in overlays:
        variants = {row["variant"] for row in specs[plot_id]["data"]["values"]}
        assert variants == set(VARIANTS), plot_id
    images = [p for p, e in plots_json["data"].items() if e and e[0].get("type") == "image"]
    assert images == ["plots/images/compare/accuracy_vs_cost.png"]


def test_epochs_tick_as_integers_points_are_labelled_and_confusion_is_as_in_the_png(plots_json):
    specs = _vega(plots_json)
    x_axis = specs["Accuracy per epoch"]["spec"]["encoding"]["x"]
    assert x_axis["field"] == "epoch" and x_axis["axis"] == {"tickMinStep": 1, "format": "d"}
    scatter = specs["Accuracy vs parameters"]
    assert {"field": "variant"} in [layer["encoding"].get("text") for layer in scatter["layer"]]
    confusion = next(s for p, s in specs.items() if p.startswith("Confusion"))["spec"]["encoding"]
    # plots/images/<variant>/confusion_matrix.png: predicted across, actual down.
    assert (confusion["x"]["field"], confusion["y"]["field"]) == ("predicted", "actual")


def test_every_chart_renders_with_vega(plots_json):
    import vl_convert

    for plot_id, spec in _vega(plots_json).items():
        assert vl_convert.vegalite_to_png(spec, scale=1)[:8] == PNG_MAGIC, plot_id
