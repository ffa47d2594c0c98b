"""The variant leaderboard: one row per variant from its evaluation and training metrics."""

from __future__ import annotations

COLUMNS = (
    ("variant", "variant", "{}"),
    ("accuracy", "test accuracy", "{:.4f}"),
    # Beside accuracy: on imbalanced classes a model that ignores the rare ones still
    # scores high accuracy, but not high balanced accuracy (mean per-class recall).
    ("balanced_accuracy", "balanced accuracy", "{:.4f}"),
    # Test-time augmentation (evaluate.tta), apart from the plain accuracy; n/a when off.
    ("tta_accuracy", "accuracy with TTA", "{:.4f}"),
    ("macro_f1", "macro-F1", "{:.4f}"),
    ("loss", "test loss", "{:.4f}"),
    ("total_params", "parameters", "{:,}"),
    ("flops_per_image", "FLOPs/image", "{:,}"),
    ("epochs_run", "epochs", "{}"),
    ("train_seconds", "train time (s)", "{:.0f}"),
)


def leaderboard_rows(
    evaluations: dict[str, dict], trainings: dict[str, dict], sort_by: str = "accuracy"
) -> list[dict]:
    """Rows sorted best first by ``sort_by`` (higher is better, except for loss)."""
    rows = []
    for variant, evaluation in evaluations.items():
        training = trainings.get(variant, {})
        row = {"variant": variant}
        for key, _, _ in COLUMNS[1:]:
            row[key] = evaluation.get(key, training.get(key))
        rows.append(row)
    if rows and sort_by not in rows[0]:
        raise ValueError(f"cannot sort by `{sort_by}`; columns: {', '.join(rows[0])}")
    descending = sort_by != "loss"
    return sorted(rows, key=lambda r: (r[sort_by] is None, r[sort_by]), reverse=descending)


def to_markdown(rows: list[dict]) -> str:
    header = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if key == "variant" else "---:" for key, _, _ in COLUMNS) + "|"
    lines = [header, rule]
    for row in rows:
        cells = [
            "n/a" if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def transfer_rows(
    pairs: list[dict], evaluations: dict[str, dict], trainings: dict[str, dict],
) -> list[dict]:
    """Each pretrained variant against its from-scratch twins, as the params stage paired
    them (resolved/compare.json)."""
    rows = []
    for pair in pairs:
        name, other = pair["pretrained"], pair["scratch"]
        if name not in evaluations or other not in evaluations:
            continue
        training = trainings.get(name, {})
        rows.append({
            "pretrained": name,
            "scratch": other,
            "pretrain_task": pair["source"],
            "pretrained_accuracy": evaluations[name]["accuracy"],
            "scratch_accuracy": evaluations[other]["accuracy"],
            "transfer_gain": evaluations[name]["accuracy"] - evaluations[other]["accuracy"],
            "pretrained_train_seconds": (
                training.get("train_seconds", 0.0) + training.get("pretrain_seconds", 0.0)
            ),
            "scratch_train_seconds": trainings.get(other, {}).get("train_seconds"),
        })
    return rows


def transfer_markdown(rows: list[dict]) -> str:
    lines = [
        "| pretrained variant | scratch variant | source task | pretrained acc. | scratch acc. "
        "| gain | time with pretraining (s) | scratch time (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pretrained']} | {r['scratch']} | {r['pretrain_task']} "
            f"| {r['pretrained_accuracy']:.4f} | {r['scratch_accuracy']:.4f} "
            f"| {r['transfer_gain']:+.4f} | {r['pretrained_train_seconds']:.0f} "
            f"| {r['scratch_train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"
