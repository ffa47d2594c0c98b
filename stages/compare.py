"""Stage compare: the leaderboard of every variant, transfer vs scratch, accuracy vs cost.

params: models, compare
"""

from cnnpipe import layout
from cnnpipe.config import load_params
from cnnpipe.io import read_json, write_csv, write_text
from cnnpipe.leaderboard import leaderboard_rows, to_markdown, transfer_markdown, transfer_rows
from cnnpipe.plots import plot_accuracy_vs_cost
from cnnpipe.runner import run


def main() -> None:
    params = load_params(layout.PARAMS)
    evaluations = {name: read_json(layout.eval_metrics(name)) for name in params.models}
    trainings = {name: read_json(layout.train_metrics(name)) for name in params.models}
    rows = leaderboard_rows(evaluations, trainings, sort_by=params.compare.sort_by)
    write_csv(layout.LEADERBOARD_CSV, rows)
    write_text(layout.LEADERBOARD_MD, to_markdown(rows))
    transfer = transfer_rows(
        {name: v.architecture for name, v in params.models.items()},
        {name: str(v.hyperparameters.get("weights", "")) for name, v in params.models.items()},
        evaluations, trainings,
    )
    write_text(layout.TRANSFER_MD, transfer_markdown(transfer))
    plot_accuracy_vs_cost(rows, layout.COMPARE_IMAGES / "accuracy_vs_cost.png")
    best = rows[0]
    print(f"best by {params.compare.sort_by}: {best['variant']} ({best[params.compare.sort_by]:.4f})")


if __name__ == "__main__":
    run(main)
