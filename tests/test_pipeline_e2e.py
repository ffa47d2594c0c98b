"""End-to-end: the real dvc.yaml on a tiny configuration, in a temporary git repository."""

import csv
import hashlib
import json

import numpy as np
import pytest
import yaml
from pipeline_repo import dvc, make_tiny_repo

pytestmark = [pytest.mark.slow, pytest.mark.minutes(4)]

TINY_MODELS = {
    "simple_cnn": {"architecture": "simple_cnn", "filters": [8, 16, 16], "dense_units": 16},
    "augmented_cnn": {
        "architecture": "bn_gap_cnn", "filters": [4, 8, 8], "dense_units": 8,
        "augmentation": {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1},
    },
    "mobilenet_transfer": {
        "architecture": "mobilenet_transfer", "weights": "pretrain", "alpha": 0.35,
        "image_size": 32, "dense_units": 16, "pretrain_epochs": 1,
        "fine_tune_epochs": 1, "fine_tune_layers": 5, "train_images": 100,
    },
    "mobilenet_scratch": {
        "architecture": "mobilenet_transfer", "weights": "none", "alpha": 0.35,
        "image_size": 32, "dense_units": 16, "epochs": 2, "train_images": 100,
    },
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = make_tiny_repo(tmp_path_factory.mktemp("pipeline"), TINY_MODELS)
    dvc(path, "repro")
    return path


def test_repro_writes_metrics_and_plots(repo):
    headline = json.loads((repo / "metrics/simple_cnn.json").read_text())
    assert set(headline) == {"accuracy", "macro_f1", "loss", "ece", "total_params", "above_chance"}
    metrics = {**json.loads((repo / "reports/evaluation/simple_cnn.json").read_text()), **headline}
    # The flag is the binomial test's verdict against the commonest class (0.1 of 200 here).
    assert metrics["above_chance"] is (metrics["chance_p"] < 0.05)
    assert metrics["majority_share"] == pytest.approx(0.1)
    assert metrics["num_test_images"] == 200
    with open(repo / "plots/confusion/simple_cnn.csv", newline="") as handle:
        pairs = list(csv.DictReader(handle))
    assert len(pairs) == 200  # one row per test image
    hits = sum(row["actual"] == row["predicted"] for row in pairs)
    assert metrics["accuracy"] == pytest.approx(hits / 200)
    assert set(metrics["per_class"]) == set(json.loads(
        (repo / "data/prepared/data_card.json").read_text())["class_names"])
    # params.yaml's test-time augmentation, reported apart from the plain accuracy.
    assert metrics["tta"] == "horizontal_flip"
    for key in ("top3_accuracy", "weighted_f1", "balanced_accuracy", "ece", "tta_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    labels, predicted = np.load(repo / "reports/predictions/simple_cnn.npy").T
    assert len(labels) == 200 and np.mean(labels == predicted) == pytest.approx(metrics["accuracy"])
    speed = json.loads((repo / "reports/speed/simple_cnn.json").read_text())
    assert speed["latency_ms_per_image"] > 0
    train = json.loads((repo / "metrics/train/simple_cnn.json").read_text())
    assert train["epochs_run"] == 1
    for name in ("training_curves.png", "confusion_matrix.png"):
        assert (repo / "plots/images/simple_cnn" / name).read_bytes()[:4] == b"\x89PNG"
    assert (repo / "models/simple_cnn/model.weights.h5").stat().st_size > 0


def test_second_repro_runs_nothing_and_status_is_clean(repo):
    assert "up to date" in dvc(repo, "status").stdout
    out = dvc(repo, "repro").stdout
    assert "Running stage" not in out


def test_plots_show_renders_every_declared_plot(repo):
    shown = json.loads(dvc(repo, "plots", "show", "--json").stdout)
    assert not shown.get("errors")
    # One chart per question with every variant overlaid; the per-variant tables and figures
    # stay on disk, off the page.
    for expected in (
        "Accuracy per epoch",
        "Loss per epoch",
        "Confusion matrices (share of each actual class)",
        "Reliability (accuracy against mean confidence per bin)",
        "ROC (micro-averaged one-vs-rest)",
        "Precision-recall (micro-averaged)",
        "Accuracy vs parameters",
        "Accuracy vs training time (s)",
        "plots/class_balance.csv",
        "plots/images/compare/accuracy_vs_cost.png",
    ):
        assert shown["data"].get(expected), expected
    curves = json.dumps(shown["data"]["Accuracy per epoch"])
    for variant in ("simple_cnn", "mobilenet_transfer"):
        assert variant in curves
    for name in ("gradcam.png", "feature_maps.png", "predictions.png", "confident_mistakes.png",
                 "reliability.png", "training_curves.png", "confusion_matrix.png"):
        assert (repo / "plots/images/simple_cnn" / name).read_bytes()[:4] == b"\x89PNG", name


def test_pretraining_and_fine_tuning_are_recorded(repo):
    train = json.loads((repo / "metrics/train/mobilenet_transfer.json").read_text())
    assert train["pretrain_task"] == "rotation"
    assert train["pretrain_epochs_run"] == 1
    assert train["epochs_run"] == 2  # one head epoch, one fine-tuning epoch
    assert train["train_images"] == 100  # the labelled budget; pretraining saw all 360
    assert json.loads(
        (repo / "metrics/train/simple_cnn.json").read_text())["train_images"] == 360
    assert train["trainable_params"] < train["total_params"]
    metrics = json.loads((repo / "metrics/mobilenet_transfer.json").read_text())
    assert metrics["total_params"] == train["total_params"]


def test_compare_stage_ranks_every_variant(repo):
    board = (repo / "reports/leaderboard.md").read_text().strip().splitlines()
    # The table, then the notes on chance under it.
    assert len([line for line in board if line.startswith("|")]) == 2 + len(TINY_MODELS)
    assert any(line.startswith("Above chance: ") for line in board)
    transfer = (repo / "reports/transfer.md").read_text()
    assert "| mobilenet_transfer | mobilenet_scratch | rotation |" in transfer
    assert (repo / "plots/images/compare/accuracy_vs_cost.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("variant", ["augmented_cnn", "mobilenet_transfer"])
def test_forced_retraining_gives_identical_weights(repo, variant):
    """Determinism beyond simple_cnn: random augmentation layers, and rotation pretraining
    followed by fine-tuning."""
    weights = repo / f"models/{variant}/model.weights.h5"
    saved = repo / f"models/{variant}/model.keras"
    first = hashlib.sha256(weights.read_bytes()).hexdigest()
    first_saved = hashlib.sha256(saved.read_bytes()).hexdigest()
    out = dvc(repo, "repro", "-f", "-s", f"train@{variant}").stdout
    assert f"Running stage 'train@{variant}'" in out
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == first
    # The whole saved model is byte-stable too, so evaluate (which loads it) stays up to date.
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == first_saved
    # evaluate@ loads model.keras, so it stays up to date; compare re-runs only because the
    # new train_seconds (a timing it charts) changed.
    assert set(json.loads(dvc(repo, "status", "--json").stdout)) <= {"compare"}


def test_changing_one_variant_reruns_only_that_variant(repo):
    # Runs last in this module: it leaves the workspace changed.
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["models"]["simple_cnn"]["dense_units"] = 24
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(repo, "repro").stdout
    assert "Running stage 'train@simple_cnn'" in out
    assert "Running stage 'evaluate@simple_cnn'" in out
    assert "Running stage 'train@mobilenet_transfer'" not in out
    assert "Running stage 'train@mobilenet_scratch'" not in out
    assert "models.simple_cnn.dense_units" in dvc(repo, "params", "diff").stdout
    assert "metrics/simple_cnn.json" in dvc(repo, "metrics", "diff").stdout


def test_a_removed_variant_leaves_no_metrics_plots_or_leaderboard_row(repo):
    # Runs after the test above, on the same workspace.
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    del params["models"]["augmented_cnn"]
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(repo, "repro").stdout
    assert "removed the outputs of augmented_cnn" in out
    assert "augmented_cnn" not in dvc(repo, "metrics", "show").stdout
    assert "augmented_cnn" not in (repo / "reports/leaderboard.md").read_text()
    shown = json.loads(dvc(repo, "plots", "show", "--json").stdout)
    assert not [plot for plot in shown["data"] if "augmented_cnn" in plot]
    assert not (repo / "models/augmented_cnn").exists()
    assert "up to date" in dvc(repo, "status").stdout


def _wait_for_queue(repo, polls: int = 900) -> str:
    """`dvc queue status` once nothing is queued or running; a bounded wait (30 minutes of
    polls, generous for a loaded machine) that names what was still queued."""
    import time

    for _ in range(polls):
        status = dvc(repo, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(2)
    pytest.fail(f"the DVC queue was still busy after {polls} polls:\n{status}")


def test_queued_and_temp_experiments_run_in_a_fresh_clone(tmp_path_factory):
    """Queued and --temp experiments run in a checkout of what git tracks: no `make`, no
    data/images, only the committed code and what a DVC remote holds."""
    from pipeline_repo import ONE_TINY_VARIANT, committed_tiny_repo, run

    origin = committed_tiny_repo(tmp_path_factory, ONE_TINY_VARIANT, "exp_origin")
    clone = tmp_path_factory.mktemp("exp_clone") / "repo"
    run(clone.parent, "git", "clone", "-q", str(origin), str(clone))
    # A DVC 3 cache folder has a local remote's layout: it stands in for `dvc remote`.
    dvc(clone, "remote", "add", "-d", "origin", str(origin / ".dvc/cache"))
    dvc(clone, "pull")
    assert not (clone / "data/images").exists()

    # Params chosen to re-run only cheap stages: every experiment still has DVC check every
    # stage's deps in its temporary checkout, which is where a missing folder failed.
    for sort_by in ("macro_f1", "loss"):
        dvc(clone, "exp", "run", "--queue", "-S", f"compare.sort_by={sort_by}")
    dvc(clone, "queue", "start", "-j", "1")
    try:
        status = _wait_for_queue(clone)
    finally:
        dvc(clone, "queue", "stop", check=False)
    logs = dvc(clone, "queue", "logs", "-h", check=False).stdout
    assert status.count("Success") == 2, status + logs
    # prepare itself runs here (new settings), and writes the same data as before.
    out = dvc(clone, "exp", "run", "--temp", "-S", "data.download.max_mb=100").stdout
    assert "Running stage 'prepare'" in out
    assert "Running stage 'train@simple_cnn'" not in out

    rows = list(csv.DictReader(dvc(clone, "exp", "show", "--csv").stdout.splitlines()))
    experiments = [row for row in rows if row["Experiment"]]
    assert len(experiments) == 3, rows
    assert {row["compare.sort_by"] for row in experiments} == {"macro_f1", "loss", "accuracy"}
    assert {row["data.download.max_mb"] for row in experiments} == {"4096", "100"}
    assert all(row["accuracy"] for row in experiments), rows
