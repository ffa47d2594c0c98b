"""Reproducibility and DVC bookkeeping on a tiny one-variant pipeline.

The tests share one repository and run in file order: the experiment test goes last because
`dvc exp run` leaves its results in the workspace.
"""

import hashlib
import json

import pytest
from pipeline_repo import ONE_TINY_VARIANT, committed_tiny_repo, dvc

pytestmark = pytest.mark.slow

WEIGHTS = "models/simple_cnn/model.weights.h5"
METRICS = "metrics/simple_cnn.json"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of a tiny repo after its first `dvc repro` (from nothing), results committed."""
    return committed_tiny_repo(tmp_path_factory, ONE_TINY_VARIANT, "repro_repo")


def test_forced_repro_gives_identical_metrics_and_weights(repo):
    # The first run built the repo; `repro -f` runs every stage again, prepare included.
    first_metrics = (repo / METRICS).read_text()
    first_weights = _sha256(repo / WEIGHTS)
    out = dvc(repo, "repro", "-f").stdout
    assert "Running stage 'train@simple_cnn'" in out  # really retrained, not restored
    assert (repo / METRICS).read_text() == first_metrics
    assert _sha256(repo / WEIGHTS) == first_weights
    environment = json.loads((repo / "metrics/train/simple_cnn.json").read_text())["environment"]
    for key in ("tensorflow", "keras", "numpy", "intra_op_threads", "cpu"):
        assert environment[key], key  # what the promise is conditional on is on record


def test_editing_files_no_stage_reads_keeps_the_pipeline_up_to_date(repo):
    for name in ("README.md", "src/cnnpipe/cli.py", "tests/test_leaderboard.py"):
        path = repo / name
        assert path.is_file(), name
        path.write_text(path.read_text() + "\n# an edit no stage depends on\n")
    (repo / "tests/test_new_feature.py").write_text("def test_nothing():\n    pass\n")

    status = dvc(repo, "status", "--json").stdout
    assert json.loads(status) == {}, status
    # Nothing re-ran: what a no-op `dvc repro` is made of (its time, a second or two, is a
    # measurement for bench/, not something a loaded machine should fail on).
    out = dvc(repo, "repro").stdout
    assert "Running stage" not in out


def test_exp_run_set_param_shows_the_experiment_and_its_metric(repo):
    dvc(repo, "exp", "run", "-S", "models.simple_cnn.dense_units=12", "--name", "dense-12")
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)

    # A list of rows: the workspace, then each baseline commit with its `experiments`, each
    # experiment a {name, revs: [{rev, name, data: {params, metrics, ...}}]}.
    baseline = next(row for row in shown if row["rev"] != "workspace")
    experiment = next(e for e in baseline["experiments"] or [] if e["name"] == "dense-12")
    data = experiment["revs"][0]["data"]

    def simple_cnn(row_data, key):
        return row_data["params"]["params.yaml"]["data"]["models"]["simple_cnn"][key]

    def total_params(row_data):
        return row_data["metrics"][METRICS]["data"]["total_params"]

    assert simple_cnn(baseline["data"], "dense_units") == 8
    assert simple_cnn(data, "dense_units") == 12
    assert total_params(data) > total_params(baseline["data"])
