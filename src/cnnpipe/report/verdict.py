"""The verdict per variant: its new accuracy judged against the training noise recorded at the
base revision, with McNemar's test on the same images beside it (no I/O here)."""

from __future__ import annotations

from cnnpipe.report.noise import judge_noise
from cnnpipe.report.significance import unchanged_variants

REAL = "real change"
WITHIN_NOISE = "within training noise"
NO_RECORD = "no noise record"


def accuracy_changes(variants: dict[str, dict], tests: dict[str, dict]) -> dict[str, dict]:
    """Per variant with something to report and an accuracy in both revisions: ``old``,
    ``new`` and ``delta``, from the per-image predictions where both revisions stored them on
    the same images, else from the metrics (a test split drawn by seed still has a delta)."""
    unchanged = set(unchanged_variants(variants, tests))
    changes = {}
    for variant, info in variants.items():
        if variant in unchanged or info["status"] != "changed":
            continue
        test = tests.get(variant, {"status": "no_base"})
        if test["status"] == "compared":
            changes[variant] = {"old": test["old"], "new": test["new"], "delta": test["delta"]}
            continue
        accuracy = next((r for r in info["rows"] if r["metric"] == "accuracy"), None)
        if accuracy is not None and accuracy["delta"] is not None:
            changes[variant] = {"old": accuracy["old"], "new": accuracy["new"],
                                "delta": accuracy["delta"]}
    return changes


def judge_changes(variants: dict[str, dict], tests: dict[str, dict], record: dict | None,
                  fingerprints: dict[str, str | None]) -> dict[str, dict]:
    """Per changed variant: the change, ``noise`` (see :func:`judge_noise`), ``mcnemar`` (the
    :func:`significance` entry) and ``verdict``: :data:`REAL` only when the new accuracy is
    no likely retrain of the base's settings (its t against every recorded run as a
    prediction, Holm-corrected p < ALPHA), :data:`WITHIN_NOISE` when it could be one,
    :data:`NO_RECORD` when the base has no usable record. The delta against the base's one
    run is shown, not judged: that run is one draw too. McNemar's test never decides it:
    two retrains of the same settings differ on the same images too."""
    changes = accuracy_changes(variants, tests)
    noise = judge_noise({v: c["new"] for v, c in changes.items()}, record, fingerprints)
    for variant, change in changes.items():
        judged = noise[variant]
        change["noise"] = judged
        change["mcnemar"] = tests.get(variant, {"status": "no_base"})
        if judged["status"] == "judged":
            change["verdict"] = REAL if judged["real"] else WITHIN_NOISE
        else:
            change["verdict"] = NO_RECORD
    return changes
