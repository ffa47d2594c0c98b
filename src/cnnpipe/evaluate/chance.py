"""Is a variant better than always answering the commonest class, and if not, why not?

A model that predicts one class scores that class's share of the test split: 0.5 on a
balanced binary set, 0.333 on three classes. A test accuracy at that level is no model, and
on a small test split a few lucky images lift it above without meaning anything. The test
is one-sided and exact: the number of correct answers against a binomial draw at the
majority share. The likely cause comes from the variant's own training record and curves,
so the warning says what to change instead of only that something is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

ALPHA = 0.05  # the one-sided binomial test's level
# A validation split this small moves by over 1 point per image, and early stopping picks
# the epoch on it: 15-16 images in the folders where variants collapsed.
SMALL_VALIDATION = 100
# Training accuracy this far above the majority share counts as having learned something.
LEARNED_MARGIN = 0.1


def chance_test(labels, predicted) -> dict:
    """``majority_share`` of the test labels, the one-sided exact binomial ``chance_p`` of
    scoring this many correct answers by answering that class alone, and ``above_chance``
    (p < :data:`ALPHA`)."""
    from scipy.stats import binomtest

    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if len(labels) == 0:
        raise ValueError("the chance test needs at least one test image")
    majority = float(np.bincount(labels).max() / len(labels))
    correct = int(np.sum(labels == predicted))
    p_value = float(binomtest(correct, len(labels), majority, alternative="greater").pvalue)
    return {"majority_share": majority, "chance_p": p_value, "above_chance": p_value < ALPHA}


def likely_cause(
    metrics: Mapping, training: Mapping, accuracy_curve: Sequence[Mapping] = ()
) -> str:
    """Why a variant scored near chance, as far as its training record (metrics/train) and
    its accuracy curve (rows of epoch, train, validation) tell: one clause per finding."""
    majority = metrics["majority_share"]
    causes = [
        *_early_stopping_causes(training),
        *_curve_causes(accuracy_curve, training.get("best_epoch"), majority),
    ]
    if training.get("pretrain_near_chance"):
        causes.append(
            f"its rotation pretraining reached {training['pretrain_val_accuracy']:.2f} "
            f"validation accuracy against a chance of {training['pretrain_chance_accuracy']:.2f}"
        )
    if metrics["accuracy"] > majority:
        causes.append(f"{metrics['num_test_images']} test images are too few to tell "
                      f"{metrics['accuracy']:.3f} from {majority:.3f}")
    return "; ".join(causes) or "nothing in its training record explains it"


def _early_stopping_causes(training: Mapping) -> list[str]:
    causes = []
    epochs_run, best = training.get("epochs_run"), training.get("best_epoch")
    if best == 1 and epochs_run and epochs_run > 1:
        causes.append(f"early stopping restored the epoch-1 weights after {epochs_run} epochs")
    val_images = training.get("val_images")
    if val_images is not None and val_images < SMALL_VALIDATION:
        causes.append(f"its validation split of {val_images} images is too small to pick "
                      "the epoch (data.val_fraction)")
    return causes


def _curve_causes(curve: Sequence[Mapping], best_epoch: int | None, majority: float) -> list[str]:
    if not curve:
        return []
    peak_train = max(float(row["train"]) for row in curve)
    kept = curve[min(best_epoch or len(curve), len(curve)) - 1]
    if peak_train < majority + LEARNED_MARGIN:
        return [f"training accuracy never passed {peak_train:.2f}: it did not learn the "
                "training images either (learning rate, epochs)"]
    if float(kept["validation"]) < majority + LEARNED_MARGIN:
        return [f"training accuracy reached {peak_train:.2f} while validation accuracy was "
                f"{float(kept['validation']):.2f} at the kept epoch: it memorized its "
                "training images"]
    return []


def chance_warning(variant: str, metrics: Mapping) -> str:
    """The stage's warning, one line: the variant, its accuracy, the majority share, p and
    the likely cause."""
    return (
        f"warning: {variant} is not above chance: test accuracy {metrics['accuracy']:.4f} "
        f"against a majority-class share of {metrics['majority_share']:.4f} "
        f"(one-sided binomial test, p = {metrics['chance_p']:.3g}); likely cause: "
        f"{metrics.get('chance_cause', 'unknown')}"
    )
