"""`cnnpipe report`: the pure parsing/rendering on inline DVC JSON, then (slow) a real change
in a tiny pipeline repo reported against HEAD."""

import argparse
import json
import re
import subprocess
import sys

import pytest
import yaml
from pipeline_repo import ONE_TINY_VARIANT, committed_tiny_repo, dvc, run

from cnnpipe import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- pure functions on DVC's JSON ---------------------------------------------------------


def test_changed_params_keeps_only_real_changes():
    diff = {"params.yaml": {
        "models.a.dense_units": {"old": 8, "new": 12, "diff": 4},
        "train.epochs": {"old": 3, "new": 3},
        "models.b.filters": {"old": None, "new": [4, 8]},
    }}
    rows = report.changed_params(diff)
    assert [(r["param"], r["old"], r["new"]) for r in rows] == [
        ("models.a.dense_units", 8, 12), ("models.b.filters", None, [4, 8])]


def test_variant_metrics_groups_eval_and_train_files_per_variant():
    diff = {
        "metrics/a.json": {
            "accuracy": {"old": 0.5, "new": 0.75, "diff": 0.25},
            "total_params": {"old": 100, "new": 120, "diff": 20},
            "roc_auc": {"old": 0.1, "new": 0.2, "diff": 0.1},
        },
        "metrics/train/a.json": {
            "train_seconds": {"old": 10.0, "new": 12.5, "diff": 2.5},
            "total_params": {"old": 100, "new": 120, "diff": 20},
            "environment.tensorflow": {"old": "2.20.0", "new": "2.21.0"},
        },
        "reports/speed/a.json": {"latency_ms_per_image": {"old": 1.0, "new": 2.0, "diff": 1.0}},
        "metrics/b.json": {"accuracy": {"old": None, "new": 0.5}},
        "metrics/c.json": {"accuracy": {"old": 0.4, "new": None}},
    }
    variants = report.variant_metrics(diff)
    assert set(variants) == {"a", "b", "c"}  # speed files are not a variant
    rows = {r["metric"]: r for r in variants["a"]["rows"]}
    assert list(rows) == ["accuracy", "total_params", "train_seconds"]
    assert rows["accuracy"]["delta"] == pytest.approx(0.25)
    assert rows["train_seconds"]["status"] == "changed"
    assert variants["a"]["other_changed"] == ["roc_auc"]
    assert variants["a"]["environment"] == [{"key": "tensorflow", "old": "2.20.0", "new": "2.21.0"}]
    assert variants["b"]["status"] == "new" and variants["b"]["rows"][0]["delta"] is None
    assert variants["c"]["status"] == "removed"


def _spec(rows, fields=("epoch", "value")):
    return {"data": {"values": rows},
            "encoding": {"x": {"field": fields[0]}, "y": {"field": fields[1]},
                         "color": {"field": "rev"}}}


def test_changed_plots_compares_only_the_drawn_fields_per_revision(tmp_path):
    same = _spec([
        {"epoch": "1", "value": "0.5", "seconds": "3", "rev": "workspace"},
        {"epoch": "1", "value": "0.5", "seconds": "9", "rev": "HEAD"},  # undrawn field differs
    ])
    moved = _spec([{"epoch": "1", "value": "0.6", "rev": "workspace"},
                   {"epoch": "1", "value": "0.5", "rev": "HEAD"}])
    new = _spec([{"epoch": "1", "value": "0.6", "rev": "workspace"}])
    old_png, new_png, same_png = (tmp_path / n for n in ("old.png", "new.png", "same.png"))
    old_png.write_bytes(PNG_MAGIC + b"a")
    new_png.write_bytes(PNG_MAGIC + b"b")
    same_png.write_bytes(PNG_MAGIC + b"a")
    data = {
        "same": [{"type": "vega", "revisions": ["workspace", "HEAD"], "content": same}],
        "moved": [{"type": "vega", "revisions": ["workspace", "HEAD"], "content": moved}],
        "new": [{"type": "vega", "revisions": ["workspace"], "content": new}],
        "img.png": [{"type": "image", "revisions": ["workspace"], "url": str(new_png)},
                    {"type": "image", "revisions": ["HEAD"], "url": str(old_png)}],
        "same.png": [{"type": "image", "revisions": ["workspace"], "url": str(same_png)},
                     {"type": "image", "revisions": ["HEAD"], "url": str(old_png)}],
        "empty": [],
    }
    changes = report.changed_plots(data)
    assert [(c.plot_id, c.kind, c.status) for c in changes] == [
        ("moved", "vega", "changed"), ("new", "vega", "new"), ("img.png", "image", "changed")]


def test_markdown_shows_params_metric_deltas_and_relative_image_links(tmp_path):
    collected = report.Collected(
        base="HEAD", commit="abc1234",
        params={"params.yaml": {"models.a.dense_units": {"old": 8, "new": 12, "diff": 4}}},
        metrics={"metrics/a.json": {"accuracy": {"old": 0.5, "new": 0.625, "diff": 0.125}}},
        plots={},
    )
    change = report.PlotChange("plots/x.csv", "vega", "changed", spec={})
    text = report.render_markdown(
        collected, report.variant_metrics(collected.metrics),
        report.changed_params(collected.params),
        [{"change": change, "files": [("", "01-x.png")], "error": None}], omitted=3,
        assets_name="report_assets", leaderboard="| variant |\n|---|\n| a |", transfer=None,
    )
    assert "| params.yaml | `models.a.dense_units` | `8` | `12` |" in text
    assert "| accuracy | 0.5000 | 0.6250 | +0.1250 |" in text
    assert "![plots/x.csv](report_assets/01-x.png)" in text
    assert "3 more changed plots not shown" in text
    assert "Transfer" not in text


def test_assets_folder_not_made_by_the_report_is_never_replaced(tmp_path):
    foreign = tmp_path / "report_assets"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(report.ReportError, match="not written by"):
        report._replace_assets(None, foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_report_parser_plugs_into_a_subcommand_parser():
    parser = argparse.ArgumentParser(prog="cnnpipe")
    report.add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--base", "origin/main", "--out", "r.md"])
    assert (args.base, args.out, args.max_plots) == ("origin/main", "r.md", report.MAX_PLOTS)
    assert args.handler is report.run_report


# --- a real change in a tiny pipeline -----------------------------------------------------


@pytest.fixture(scope="module")
def changed_repo(tmp_path_factory):
    """A tiny repo with committed results (dense_units 8), then dense_units 12 reproduced."""
    repo = committed_tiny_repo(tmp_path_factory, ONE_TINY_VARIANT, "report_repo")
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    assert params["models"]["simple_cnn"]["dense_units"] == 8
    params["models"]["simple_cnn"]["dense_units"] = 12
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro")
    return repo


@pytest.mark.slow
def test_report_against_head_lists_changes_and_embeds_pngs(changed_repo, tmp_path):
    out = tmp_path / "out" / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "cnnpipe.report", "--base", "HEAD", "--out", str(out)],
        cwd=changed_repo, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| params.yaml | `models.simple_cnn.dense_units` | `8` | `12` |" in text
    section = text.split("### simple_cnn", 1)[1].split("\n## ", 1)[0]
    for metric in ("accuracy", "macro_f1", "loss", "total_params", "train_seconds"):
        assert re.search(rf"^\| {metric} \| [^|]+ \| [^|]+ \| [^|]* \|$", section, re.M), metric
    old, new = (json.loads(run(changed_repo, "git", "show", "HEAD:metrics/simple_cnn.json").stdout),
                json.loads((changed_repo / "metrics/simple_cnn.json").read_text()))
    growth = new["total_params"] - old["total_params"]
    assert growth > 0 and f"| +{growth:,} |" in section
    assert "## Leaderboard (workspace)" in text and "| simple_cnn |" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert links and all(not link.startswith("/") for link in links)
    assert any(link.endswith("curves-accuracy-simple-cnn-csv.png") for link in links)
    for link in links:
        assert (out.parent / link).read_bytes()[:8] == PNG_MAGIC, link
    assert not (changed_repo / "dvc_plots").exists()  # DVC's image copies went to a temp dir
