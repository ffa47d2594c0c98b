"""Stage compare: the leaderboard of every variant, transfer vs scratch, accuracy vs cost.

settings: resolved/compare.json (compare, the variants, the transfer pairs)
"""

from cnnpipe.core import layout
from cnnpipe.core.io import read_json, write_csv, write_text
from cnnpipe.compare.leaderboard import leaderboard_rows, to_markdown, transfer_markdown, transfer_rows
from cnnpipe.compare.figures import plot_accuracy_vs_cost
from cnnpipe.compare.overlays import (
    OVERLAY_DIR, confusion_count_rows, curve_rows, stacked_rows,
)
from cnnpipe.core.runner import run
from cnnpipe.core.settings import read_settings


def main() -> None:
    settings = read_settings(layout.resolved("compare"))
    variants = settings.variants
    # The leaderboard shows balanced accuracy too, which lives in the detail file.
    evaluations = {
        name: {**read_json(layout.evaluation_detail(name)), **read_json(layout.eval_metrics(name))}
        for name in variants
    }
    trainings = {name: read_json(layout.train_metrics(name)) for name in variants}
    sort_by = settings.compare.sort_by
    rows = leaderboard_rows(evaluations, trainings, sort_by=sort_by)
    write_csv(layout.LEADERBOARD_CSV, rows)
    write_text(layout.LEADERBOARD_MD, to_markdown(rows))
    transfer = transfer_rows(
        [pair.to_dict() for pair in settings.transfer_pairs], evaluations, trainings
    )
    write_text(layout.TRANSFER_MD, transfer_markdown(transfer))
    plot_accuracy_vs_cost(rows, layout.COMPARE_IMAGES / "accuracy_vs_cost.png")
    names = list(variants)
    write_csv(OVERLAY_DIR / "curves.csv", curve_rows(names))
    for kind in layout.PLOT_KINDS:
        write_csv(OVERLAY_DIR / f"{kind}.csv", stacked_rows(kind, names))
    class_names = read_json(layout.DATA_CARD)["class_names"]
    write_csv(OVERLAY_DIR / "confusion.csv", confusion_count_rows(names, class_names))
    best = rows[0]
    print(f"best by {sort_by}: {best['variant']} ({best[sort_by]:.4f})")


if __name__ == "__main__":
    run(main, tensorflow=False)
