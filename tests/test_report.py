"""`cnnpipe report`: the pure parsing/rendering on inline DVC JSON, then (slow) a real change
in a tiny pipeline repo reported against HEAD."""

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from pipeline_repo import ONE_TINY_VARIANT, ROOT, committed_tiny_repo, dvc, run

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


def test_paired_change_matches_mcnemar_exact_by_hand():
    labels = np.zeros(1000, dtype=np.int64)
    old = np.zeros(1000, dtype=np.int64)
    old[:100] = 1  # base: 900 right
    new = old.copy()
    new[:10] = 0  # 10 images now right
    new[500:502] = 1  # 2 images now wrong
    change = report.paired_accuracy_change((labels, old), (labels, new))
    assert (change["now_right"], change["now_wrong"]) == (10, 2)
    assert change["delta"] == pytest.approx(0.008)
    # Two-sided exact binomial on 2 of 12 discordant pairs: 2 * (1 + 12 + 66) / 2**12.
    assert change["p_value"] == pytest.approx(2 * 79 / 4096)
    assert change["differs"] and change["low"] < 0.008 < change["high"]
    spread = ((12 / 1000 - 0.008**2) / 1000) ** 0.5
    assert change["high"] - change["low"] == pytest.approx(2 * 1.959964 * spread, rel=1e-5)
    with pytest.raises(ValueError, match="test sets differ"):
        report.paired_accuracy_change((labels[:-1], old[:-1]), (labels, new))


def _predictions_with(now_right: int, now_wrong: int, n: int = 1000):
    labels = np.zeros(n, dtype=np.int64)
    old = np.zeros(n, dtype=np.int64)
    old[: n // 2] = 1
    new = old.copy()
    new[:now_right] = 0
    new[n - now_wrong:] = 1
    return (labels, old), (labels, new)


def test_holm_corrects_for_testing_every_variant_at_once():
    """Nine variants: one p of 0.03 alone is under 0.05, not once corrected for nine."""
    predictions = {f"v{i}": _predictions_with(3 + i % 2, 3) for i in range(8)}
    predictions["lucky"] = _predictions_with(12, 3)
    tests = report.significance(predictions)
    lucky = tests["lucky"]
    assert 0.01 < lucky["p_value"] < 0.05
    assert lucky["p_holm"] == pytest.approx(min(1.0, 9 * lucky["p_value"]))
    assert not lucky["differs"]
    assert all(t["p_holm"] >= t["p_value"] and not t["differs"] for t in tests.values())
    # A strong change survives the correction.
    predictions["strong"] = _predictions_with(60, 3)
    assert report.significance(predictions)["strong"]["differs"]


def _collected_with_two_variants():
    metrics = {
        "metrics/a.json": {"accuracy": {"old": 0.9, "new": 0.903, "diff": 0.003},
                           "loss": {"old": 0.3, "new": 0.29, "diff": -0.01}},
        "metrics/b.json": {"accuracy": {"old": 0.8, "new": 0.8, "diff": 0}},
    }
    return report.Collected(base="main", commit="abc1234", params={}, metrics=metrics, plots={})


def _cells(text: str, variant: str) -> list[str]:
    row = next(line for line in text.splitlines() if line.startswith(f"| {variant} |"))
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def test_markdown_shows_mcnemar_beside_the_verdict_and_leaves_out_unchanged_variants():
    labels = np.arange(1000) % 10
    base_a = np.where(np.arange(1000) < 900, labels, (labels + 1) % 10)
    new_a = base_a.copy()
    new_a[900:905] = labels[900:905]  # 5 now right
    new_a[0:2] = (labels[0:2] + 1) % 10  # 2 now wrong: 0.903, p = 0.45
    b = np.where(np.arange(1000) < 800, labels, (labels + 1) % 10)
    tests = report.significance({"a": ((labels, base_a), (labels, new_a)),
                                 "b": ((labels, b), (labels, b))})
    collected = _collected_with_two_variants()
    text = report.render_markdown(collected, report.variant_metrics(collected.metrics), [], [],
                                  omitted=0, assets_name="r", leaderboard=None, transfer=None,
                                  tests=tests)
    cells = _cells(text, "a")
    assert cells[3] == "+0.30 pp" and cells[8:11] == ["0.45", "0.45", "5 / 2"]
    # No noise record was given: McNemar's p alone gives no verdict.
    assert cells[7] == "no noise record at `main`: `python bench/training_noise.py` measures it"
    assert "### b" not in text and "| b |" not in text
    assert "Unchanged (same predictions or same metrics as `main`, not listed): b." in text


def test_markdown_without_base_predictions_shows_deltas_without_a_test():
    collected = _collected_with_two_variants()
    labels = np.zeros(10, dtype=np.int64)
    tests = report.significance({"a": (None, (labels, labels)), "b": (None, (labels, labels))})
    text = report.render_markdown(collected, report.variant_metrics(collected.metrics), [], [],
                                  omitted=0, assets_name="r", leaderboard=None, transfer=None,
                                  tests=tests)
    cells = _cells(text, "a")
    assert cells[3] == "+0.30 pp" and cells[8:] == ["n/a"] * 4
    assert "No McNemar test for a: `main` stored no predictions." in text
    assert "| accuracy | 0.9000 | 0.9030 | +0.0030 |" in text
    assert "### b" not in text  # same headline numbers, nothing to say


def test_assets_folder_not_made_by_the_report_is_never_replaced(tmp_path):
    foreign = tmp_path / "report_assets"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(report.ReportError, match="not written by"):
        report.replace_assets(None, foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_report_parser_plugs_into_a_subcommand_parser():
    parser = argparse.ArgumentParser(prog="cnnpipe")
    report.add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--base", "origin/main", "--out", "r.md"])
    assert (args.base, args.out, args.max_plots) == ("origin/main", "r.md", report.MAX_PLOTS)
    assert args.handler is report.run_report


# --- a real change in a tiny pipeline -----------------------------------------------------

# Two variants, so the report can be seen to leave the unchanged one out.
TWO_TINY_VARIANTS = {
    **ONE_TINY_VARIANT,
    "narrow_cnn": {"architecture": "simple_cnn", "filters": [4, 4, 4], "dense_units": 8},
}


@pytest.fixture(scope="module")
def changed_repo(tmp_path_factory):
    """A tiny two-variant repo with committed results (simple_cnn dense_units 8), then
    dense_units 12 reproduced and committed: the two commits a pull request compares."""
    repo = committed_tiny_repo(tmp_path_factory, TWO_TINY_VARIANTS, "report_repo")
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    assert params["models"]["simple_cnn"]["dense_units"] == 8
    params["models"]["simple_cnn"]["dense_units"] = 12
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "wider dense layer in simple_cnn")
    return repo


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_report_on_a_one_param_change_tests_that_variant_only(changed_repo, tmp_path):
    out = tmp_path / "out" / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "cnnpipe.report", "--base", "HEAD~1", "--out", str(out)],
        cwd=changed_repo, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| params.yaml | `models.simple_cnn.dense_units` | `8` | `12` |" in text
    verdict = _section(text, "## Is the change real?")
    (row,) = [line for line in verdict.splitlines() if line.startswith("| simple_cnn |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert re.fullmatch(r"[+-]\d+\.\d\d pp to [+-]\d+\.\d\d pp", cells[11]), row  # interval
    assert re.fullmatch(r"< 0\.001|\d\.?\d*(e-\d+)?", cells[8]), row  # McNemar p-value
    assert re.fullmatch(r"< 0\.001|\d\.?\d*(e-\d+)?", cells[9]), row  # Holm-adjusted
    # HEAD~1 committed no training-noise record: no verdict, and the way to get one.
    assert cells[7].startswith("no noise record at `HEAD~1`"), row
    # The untouched variant kept its predictions: no rows, one mention.
    assert "narrow_cnn |" not in verdict and "### narrow_cnn" not in text
    assert "not listed): narrow_cnn." in text
    section = text.split("### simple_cnn", 1)[1].split("\n## ", 1)[0]
    for metric in ("accuracy", "macro_f1", "loss", "ece", "total_params", "train_seconds"):
        assert re.search(rf"^\| {metric} \| [^|]+ \| [^|]+ \| [^|]* \|$", section, re.M), metric
    old, new = (json.loads(run(changed_repo, "git", "show", "HEAD~1:metrics/simple_cnn.json").stdout),
                json.loads((changed_repo / "metrics/simple_cnn.json").read_text()))
    growth = new["total_params"] - old["total_params"]
    assert growth > 0 and f"| +{growth:,} |" in section
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert links and all(not link.startswith("/") for link in links)
    for link in links:
        assert (out.parent / link).read_bytes()[:8] == PNG_MAGIC, link
    assert not (changed_repo / "dvc_plots").exists()  # DVC's image copies went to a temp dir


@pytest.mark.slow
def test_metrics_diff_against_the_previous_commit_lists_the_changed_variant_only(changed_repo):
    rows = dvc(changed_repo, "metrics", "diff", "HEAD~1").stdout.strip().splitlines()[1:]
    assert rows and all(row.startswith("metrics/simple_cnn.json") for row in rows), rows


@pytest.mark.slow
def test_the_workflows_report_step_writes_the_comment_and_the_job_summary(changed_repo, tmp_path):
    """The `run:` of ci.yml's report step, as GitHub would run it on this two-commit repo."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    step = next(s for s in job["steps"] if "ci_report.sh" in s.get("run", ""))
    summary = tmp_path / "step_summary.md"
    env = {**os.environ, "BASE": "HEAD~1", "PYTHON": sys.executable,
           "GITHUB_STEP_SUMMARY": str(summary)}
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=changed_repo, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    body = (changed_repo / "report.md").read_text()
    assert "`models.simple_cnn.dense_units` | `8` | `12`" in body  # changed params
    assert "McNemar" in body and re.search(r"^\| simple_cnn \|.* pp to .*\|$", body, re.M)
    images = re.findall(r"!\[[^\]]*\]\((report_assets/[^)]+\.png)\)", body)
    assert images and all((changed_repo / image).is_file() for image in images)
    assert summary.read_text().startswith(body)  # a fork's read-only token still shows it
