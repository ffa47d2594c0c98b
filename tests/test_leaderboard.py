import json
import re
from pathlib import Path

import pytest

from cnnpipe.compare.leaderboard import leaderboard_rows, to_markdown, transfer_markdown, transfer_rows

ROOT = Path(__file__).resolve().parents[1]

EVALS = {
    "a": {"accuracy": 0.91, "balanced_accuracy": 0.90, "macro_f1": 0.90, "loss": 0.30,
          "total_params": 1000},
    "b": {"accuracy": 0.93, "balanced_accuracy": 0.81, "macro_f1": 0.92, "loss": 0.25,
          "total_params": 5000},
    "c": {"accuracy": 0.88, "balanced_accuracy": 0.88, "macro_f1": 0.89, "loss": 0.20,
          "total_params": 200},
}
TRAINS = {
    "a": {"train_seconds": 10.0, "epochs_run": 3, "flops_per_image": 100},
    "b": {"train_seconds": 50.0, "epochs_run": 4, "flops_per_image": 900,
          "pretrain_task": "rotation", "pretrain_seconds": 5.0},
    "c": {"train_seconds": 5.0, "epochs_run": 2, "flops_per_image": 50},
}


@pytest.mark.parametrize("key, order", [
    ("accuracy", ["b", "a", "c"]),
    ("macro_f1", ["b", "a", "c"]),
    ("balanced_accuracy", ["a", "c", "b"]),
    ("loss", ["c", "b", "a"]),
])
def test_sorting(key, order):
    rows = leaderboard_rows(EVALS, TRAINS, sort_by=key)
    assert [r["variant"] for r in rows] == order


def test_markdown_has_a_row_per_variant_with_merged_training_facts():
    text = to_markdown(leaderboard_rows(EVALS, TRAINS))
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 3
    # No test-time augmentation and no chance test in these evaluations: the columns say so.
    assert lines[2].startswith(
        "| b | 0.9300 | n/a | 0.8100 | n/a | 0.9200 | 0.2500 | 5,000 | 900 | 4 | 50 |"
    )


def test_accuracy_with_test_time_augmentation_stands_beside_the_plain_one():
    evaluations = {**EVALS, "b": {**EVALS["b"], "tta": "horizontal_flip", "tta_accuracy": 0.9412}}
    text = to_markdown(leaderboard_rows(evaluations, TRAINS))
    assert "| accuracy with TTA |" in text.splitlines()[0]
    assert "| b | 0.9300 | n/a | 0.8100 | 0.9412 | 0.9200 |" in text


def test_a_variant_at_chance_is_marked_and_explained_under_the_table():
    chance = {"num_test_images": 48, "majority_share": 1 / 3}
    cause = "early stopping restored the epoch-1 weights after 4 epochs"
    evaluations = {
        "a": {**EVALS["a"], **chance, "above_chance": True, "chance_p": 1e-20},
        "b": {**EVALS["b"], **chance, "above_chance": True, "chance_p": 1e-25},
        "c": {**EVALS["c"], **chance, "accuracy": 1 / 3, "above_chance": False,
              "chance_p": 0.5598, "chance_cause": cause},
    }
    text = to_markdown(leaderboard_rows(evaluations, TRAINS))
    table, notes = text.split("\n\n", 1)
    assert "| above chance |" in table.splitlines()[0]
    assert "| b | 0.9300 | yes |" in table and "| c | 0.3333 | **NO** |" in table
    assert "significantly above the 0.3333 that always answering the commonest class scores " \
        "on these 48 test images" in notes
    assert f"**c is not above chance**: 0.3333 against 0.3333 (p = 0.56). Likely cause: {cause}." \
        in notes
    assert "**a is not" not in notes and "**b is not" not in notes


def test_transfer_rows_follow_the_pairs_the_params_stage_made():
    """cnnpipe.params.resolve.transfer_pairs pairs the variants (resolved/compare.json); the
    leaderboard only scores each pair, skipping one whose variant has no evaluation."""
    pairs = [
        {"pretrained": "b", "scratch": "c", "source": "rotation"},
        {"pretrained": "b", "scratch": "gone", "source": "rotation"},
        {"pretrained": "a", "scratch": "c", "source": "imagenet"},
    ]
    rows = transfer_rows(pairs, EVALS, TRAINS)
    assert [(r["pretrained"], r["scratch"], r["pretrain_task"]) for r in rows] == [
        ("b", "c", "rotation"), ("a", "c", "imagenet"),
    ]
    assert rows[0]["transfer_gain"] == pytest.approx(0.05)
    assert rows[0]["pretrained_train_seconds"] == 55.0  # training and its source task
    assert rows[1]["pretrained_train_seconds"] == 10.0
    text = transfer_markdown(rows)
    assert "| b | c | rotation | 0.9300 | 0.8800 | +0.0500 | 55 | 5 |" in text
    assert "| a | c | imagenet | 0.9100 | 0.8800 | +0.0300 | 10 | 5 |" in text
    assert transfer_rows([], EVALS, TRAINS) == []
    assert "learned nothing" not in text  # no record of the source task's own score


def test_a_source_task_near_chance_is_named_with_what_would_help():
    """The small folders' case: rotation pretraining at 0.27 against a chance of 0.25."""
    pairs = [{"pretrained": "b", "scratch": "c", "source": "rotation"}]
    trains = {**TRAINS, "b": {**TRAINS["b"], "pretrain_val_accuracy": 0.27,
                              "pretrain_chance_accuracy": 0.25, "pretrain_near_chance": True}}
    text = transfer_markdown(transfer_rows(pairs, EVALS, trains))
    note = text.split("\n\n", 1)[1]
    assert note.startswith("**b: the rotation task learned nothing useful**: its own validation "
                           "accuracy reached 0.27 against a chance of 0.25")
    assert "`models.b.weights: imagenet`" in note and "`weights: none`, as c trains" in note
    learned = {**trains, "b": {**trains["b"], "pretrain_val_accuracy": 0.9,
                               "pretrain_near_chance": False}}
    assert "learned nothing" not in transfer_markdown(transfer_rows(pairs, EVALS, learned))


def committed_metrics():
    evaluations, trainings = {}, {}
    for path in sorted((ROOT / "metrics").glob("*.json")):
        # As the compare stage reads them: the headline file and the evaluation detail.
        detail = json.loads((ROOT / "reports/evaluation" / path.name).read_text())
        evaluations[path.stem] = {**detail, **json.loads(path.read_text())}
        trainings[path.stem] = json.loads((ROOT / "metrics/train" / path.name).read_text())
    return evaluations, trainings


def readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"README.md lacks the {name} block"
    return match.group(1)


def test_readme_results_are_generated_from_committed_metrics():
    evaluations, trainings = committed_metrics()
    assert evaluations, "no committed metrics"
    expected = to_markdown(leaderboard_rows(evaluations, trainings))
    assert (ROOT / "reports/leaderboard.md").read_text() == expected
    assert readme_block("leaderboard") == expected
    assert readme_block("transfer") == (ROOT / "reports/transfer.md").read_text()


def test_readme_export_parity_is_the_committed_report(monkeypatch):
    import runpy

    monkeypatch.chdir(ROOT)
    sync = runpy.run_path(str(ROOT / "scripts/sync_readme.py"), run_name="sync_readme")
    tables = sync["export_tables"]()
    assert "| ONNX (onnxruntime) |" in tables and not tables.startswith("#")
    assert readme_block("export") == tables
