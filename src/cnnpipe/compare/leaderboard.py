"""The variant leaderboard: one row per variant from its evaluation and training metrics."""

from __future__ import annotations


def _chance_cell(above: bool) -> str:
    return "yes" if above else "**NO**"


COLUMNS = (
    ("variant", "variant", "{}"),
    ("accuracy", "test accuracy", "{:.4f}"),
    # Beside accuracy: a score no better than always answering the commonest class is no
    # model, however the number looks (cnnpipe.evaluate.chance; explained under the table).
    ("above_chance", "above chance", _chance_cell),
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
        # Not columns of the table: the note under it reads them.
        for key in CHANCE_NOTE_KEYS:
            row[key] = evaluation.get(key)
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
        cells = [_cell(row.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + chance_notes(rows)) + "\n"


def _cell(value, fmt) -> str:
    if value is None:
        return "n/a"
    return fmt(value) if callable(fmt) else fmt.format(value)


CHANCE_NOTE_KEYS = ("num_test_images", "majority_share", "chance_p", "chance_cause")


def chance_notes(rows: list[dict]) -> list[str]:
    """The lines under the table: what "above chance" means for this test split, then each
    variant that is not, with its numbers and the likely cause evaluate found."""
    scored = [row for row in rows if row.get("majority_share") is not None]
    if not scored:
        return []
    first = scored[0]
    notes = [
        "",
        f"Above chance: test accuracy significantly above the {first['majority_share']:.4f} "
        f"that always answering the commonest class scores on these {first['num_test_images']:,} "
        "test images (one-sided exact binomial test, p < 0.05).",
    ]
    for row in scored:
        if row["above_chance"] is False:
            notes += ["", (
                f"**{row['variant']} is not above chance**: {row['accuracy']:.4f} against "
                f"{row['majority_share']:.4f} (p = {row['chance_p']:.3g}). Likely cause: "
                f"{row.get('chance_cause') or 'not recorded'}."
            )]
    return notes


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
            **{key: training.get(key) for key in SOURCE_TASK_KEYS},
        })
    return rows


# What the train stage recorded of a source task's own score (cnnpipe.train.pretraining).
SOURCE_TASK_KEYS = ("pretrain_val_accuracy", "pretrain_chance_accuracy", "pretrain_near_chance")


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
    for r in rows:
        if r.get("pretrain_near_chance"):
            lines += ["", _useless_source(r)]
    return "\n".join(lines) + "\n"


def _useless_source(row: dict) -> str:
    """The note for a source task that learned nothing: its backbone is near random, so
    the pretrained variant starts no better than its scratch twin and is fine-tuned less."""
    name = row["pretrained"]
    return (
        f"**{name}: the {row['pretrain_task']} task learned nothing useful**: its own "
        f"validation accuracy reached {row['pretrain_val_accuracy']:.2f} against a chance of "
        f"{row['pretrain_chance_accuracy']:.2f}, so the backbone it handed on is close to "
        "random and the gain above says nothing about transfer. What helps: more training "
        f"images for the source task; `models.{name}.weights: imagenet` with Keras' cached "
        "ImageNet file (docs/variants.md, transfer learning offline); or `weights: none`, "
        f"as {row['scratch']} trains."
    )
