"""Do two trained models differ on the same test images? McNemar's exact test on the per-image
predictions of two revisions, and Holm's correction shared with the training-noise verdict."""

from __future__ import annotations

import math

ALPHA = 0.05  # the family-wise error rate of one report, for either test


def paired_accuracy_change(base, workspace, confidence: float = 0.95) -> dict:
    """Accuracy change between two models' predictions on the same test images.

    ``base`` and ``workspace`` are ``(labels, predicted)``. The p-value is McNemar's exact
    test: of the images exactly one model gets right, is the split between "now right" and
    "now wrong" more lopsided than a fair coin would make it? The interval is the Wald
    interval of a paired difference of proportions, which uses the same discordant counts.
    Raises ValueError when the labels differ (not the same test set: no pairing).
    """
    from scipy.stats import binomtest, norm

    (old_labels, old_predicted), (new_labels, new_predicted) = base, workspace
    if len(old_labels) != len(new_labels) or not (old_labels == new_labels).all():
        raise ValueError("the test sets differ (other images or another order)")
    n = len(new_labels)
    if n == 0:
        raise ValueError("no test images")
    old_right = old_predicted == old_labels
    new_right = new_predicted == new_labels
    now_right = int((new_right & ~old_right).sum())
    now_wrong = int((old_right & ~new_right).sum())
    discordant = now_right + now_wrong
    delta = (now_right - now_wrong) / n
    spread = math.sqrt(max(discordant / n - delta * delta, 0.0) / n)
    z = float(norm.ppf(0.5 + confidence / 2))
    p_value = binomtest(min(now_right, now_wrong), discordant, 0.5).pvalue if discordant else 1.0
    return {
        "images": n, "old": float(old_right.mean()), "new": float(new_right.mean()),
        "delta": delta, "low": delta - z * spread, "high": delta + z * spread,
        "now_right": now_right, "now_wrong": now_wrong,
        "changed_predictions": int((old_predicted != new_predicted).sum()),
        # `differs` for this one test alone; significance() corrects it for the whole report.
        # It says these two models differ on these images, not that the change beats the
        # noise of retraining (two seeds of one commit differ too): noise.py judges that.
        "p_value": float(p_value), "differs": bool(p_value < ALPHA),
    }


def significance(predictions: dict) -> dict[str, dict]:
    """Per variant: ``{"status": ...}`` with ``status`` one of ``compared`` (with the
    :func:`paired_accuracy_change` fields), ``identical`` (every prediction the same),
    ``no_base`` (the base stored no predictions), ``no_workspace``, ``unpaired`` (with
    ``reason``)."""
    result = {}
    for variant, (base, workspace) in predictions.items():
        if workspace is None:
            result[variant] = {"status": "no_workspace"}
        elif base is None:
            result[variant] = {"status": "no_base"}
        else:
            try:
                change = paired_accuracy_change(base, workspace)
            except ValueError as exc:
                result[variant] = {"status": "unpaired", "reason": str(exc)}
                continue
            status = "identical" if change["changed_predictions"] == 0 else "compared"
            result[variant] = {"status": status, **change}
    _holm(result)
    return result


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values for the tests of one report: nine tests at 0.05 would
    call one change significant by chance in about every other report. An adjusted p under
    ALPHA keeps the family-wise error rate at ALPHA."""
    adjusted, running = {}, 0.0
    ordered = sorted((p, name) for name, p in p_values.items())
    for rank, (p_value, name) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p_value))
        adjusted[name] = running
    return adjusted


def _holm(tests: dict[str, dict]) -> None:
    """Each compared test gets ``p_holm``, and ``differs`` follows it."""
    adjusted = holm({name: t["p_value"] for name, t in tests.items() if t["status"] == "compared"})
    for name, p_holm in adjusted.items():
        tests[name]["p_holm"] = p_holm
        tests[name]["differs"] = bool(p_holm < ALPHA)


def unchanged_variants(variants: dict[str, dict], tests: dict[str, dict]) -> list[str]:
    """Variants with nothing to report: predictions identical where both revisions stored
    them, else every headline metric equal."""
    same = []
    for variant, info in variants.items():
        if info["status"] != "changed":
            continue
        test = tests.get(variant, {"status": "no_base"})
        headline_same = all(row["status"] == "same" for row in info["rows"]
                            if row["metric"] != "train_seconds")
        if test["status"] == "identical" or (test["status"] != "compared" and headline_same):
            same.append(variant)
    return same
