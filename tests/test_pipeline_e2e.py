"""End-to-end: the real dvc.yaml on a tiny configuration, in a temporary git repository."""

import json

import pytest
from pipeline_repo import dvc, make_tiny_repo

pytestmark = pytest.mark.slow

TINY_MODELS = {
    "simple_cnn": {"architecture": "simple_cnn", "filters": [8, 16, 16], "dense_units": 16},
    "mobilenet_transfer": {
        "architecture": "mobilenet_transfer", "weights": "pretrain", "alpha": 0.35,
        "image_size": 32, "dense_units": 16, "pretrain_epochs": 1,
        "fine_tune_epochs": 1, "fine_tune_layers": 5,
    },
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = make_tiny_repo(tmp_path_factory.mktemp("pipeline"), TINY_MODELS)
    dvc(path, "repro")
    return path


def test_repro_writes_metrics_and_plots(repo):
    metrics = json.loads((repo / "metrics/simple_cnn.json").read_text())
    assert metrics["num_test_images"] == 200
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class"]) == set(json.loads(
        (repo / "data/prepared/data_card.json").read_text())["class_names"])
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
    ids = set(shown["data"])
    for expected in (
        "plots/curves/accuracy/simple_cnn.csv",
        "plots/curves/loss/simple_cnn.csv",
        "plots/confusion/simple_cnn.csv",
        "plots/images/simple_cnn/training_curves.png",
    ):
        assert expected in ids
        assert shown["data"][expected], expected


def test_pretraining_and_fine_tuning_are_recorded(repo):
    train = json.loads((repo / "metrics/train/mobilenet_transfer.json").read_text())
    assert train["pretrain_task"] == "rotation"
    assert train["pretrain_epochs_run"] == 1
    assert train["epochs_run"] == 2  # one head epoch, one fine-tuning epoch
    assert train["trainable_params"] < train["total_params"]
    metrics = json.loads((repo / "metrics/mobilenet_transfer.json").read_text())
    assert metrics["total_params"] == train["total_params"]


def test_changing_one_variant_reruns_only_that_variant(repo):
    import yaml

    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["models"]["simple_cnn"]["dense_units"] = 24
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = dvc(repo, "repro").stdout
        assert "Running stage 'train@simple_cnn'" in out
        assert "Running stage 'evaluate@simple_cnn'" in out
        assert "Running stage 'train@mobilenet_transfer'" not in out
        diff = dvc(repo, "params", "diff").stdout
        assert "models.simple_cnn.dense_units" in diff
        assert "metrics/simple_cnn.json" in dvc(repo, "metrics", "diff").stdout
    finally:
        params_file.write_text(original)
        dvc(repo, "repro")


def test_param_change_reruns_train_and_shows_in_diffs(repo):
    dvc(repo, "exp", "run", "-S", "train.batch_size=32", "--name", "smaller-batch")  # noqa
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    assert "smaller-batch" in json.dumps(shown)
