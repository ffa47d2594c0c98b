"""Stage evaluate@<variant>: test-set metrics, plot tables and diagnostic figures.

settings: resolved/evaluate.json (test-time augmentation); the saved model and its card
(written by train@<variant>) hold everything about the model

A variant not above chance (cnnpipe.evaluate.chance) is explained from its training record
(metrics/train/<variant>.json) and accuracy curve, which train@<variant> writes beside the
model. They are not deps in dvc.yaml on purpose: they follow from the same training as
model.keras, which is, and their timings change on every retraining of identical weights,
which would re-run this stage for nothing.
"""

import csv
import sys
import time

import numpy as np

from cnnpipe.core import layout
from cnnpipe.evaluate.metrics import (
    confusion_counts,
    confusion_rows,
    extended_metrics,
    precision_recall_rows,
    reliability_table,
    roc_rows,
)
from cnnpipe.core.io import read_json, write_csv, write_json
from cnnpipe.evaluate.chance import chance_warning, likely_cause
from cnnpipe.evaluate.outputs import split_headline, write_predictions
from cnnpipe.evaluate.figures import (
    plot_confident_mistakes,
    plot_confusion_matrix,
    plot_feature_maps,
    plot_gradcam_grid,
    plot_prediction_grid,
    plot_reliability_diagram,
)
from cnnpipe.core.runner import run
from cnnpipe.core.settings import read_settings
from cnnpipe.core.shards import ShardSet
from cnnpipe.inference import INFERENCE_BATCH, TrainedVariant, measure_latency, mirrored

GALLERY = 16  # images per figure: enough to spot patterns, few enough to read the titles
PLOT_TABLES = {
    "calibration": reliability_table,
    "roc": roc_rows,
    "precision_recall": precision_recall_rows,
}


def main(variant_name: str) -> None:
    settings = read_settings(layout.resolved("evaluate")).evaluate
    trained = TrainedVariant.load(layout.model_dir(variant_name))
    test = ShardSet(layout.split_dir("test"))
    metrics, probabilities = _score(trained, test, settings.tta)
    _write_tables(variant_name, test.labels, probabilities, trained.class_names)
    _plot_figures(trained, test, probabilities)
    print(f"{variant_name}: test accuracy {metrics['accuracy']:.4f}, "
          f"macro-F1 {metrics['macro_f1']:.4f}")


def _score(trained: TrainedVariant, test: ShardSet, tta: str) -> tuple[dict, np.ndarray]:
    """Test-set metrics and speed, written; returns the metrics and the class probabilities."""
    variant_name, labels = trained.variant, test.labels
    start = time.perf_counter()
    # The model takes the stored uint8 pixels and normalizes them itself.
    probabilities = trained.predict(test.dataset(INFERENCE_BATCH))
    batch_seconds = time.perf_counter() - start

    metrics = extended_metrics(labels, probabilities, trained.class_names)
    # Trainable counts depend on the training phase; metrics/train/<variant>.json has them.
    metrics["total_params"] = trained.model.count_params()
    metrics["tta"] = tta
    if tta == "horizontal_flip":
        mirror = trained.predict(mirrored(test.dataset(INFERENCE_BATCH)))
        averaged = (probabilities + mirror) / 2
        metrics["tta_accuracy"] = float(np.mean(averaged.argmax(axis=1) == labels))
    if not metrics["above_chance"]:
        _explain_chance(variant_name, metrics)
    headline, detail = split_headline(metrics)
    write_json(layout.eval_metrics(variant_name), headline)
    write_json(layout.evaluation_detail(variant_name), detail)
    # Timings vary run to run, so they live apart from the reproducible metrics above.
    latency = measure_latency(trained.model, test.read([0]))
    write_json(layout.speed_metrics(variant_name), {
        "test_images_per_second": round(len(labels) / batch_seconds, 1),
        "latency_ms_per_image": round(latency * 1000, 3),
    })
    return metrics, probabilities


def _explain_chance(variant_name: str, metrics: dict) -> None:
    """Add the likely cause of a score at chance, from the variant's training record and
    accuracy curve, and say so on stderr: never only a number in a file."""
    training_file = layout.train_metrics(variant_name)
    curve_file = layout.curve_table("accuracy", variant_name)
    training = read_json(training_file) if training_file.is_file() else {}
    curve = []
    if curve_file.is_file():
        with open(curve_file, newline="") as rows:
            curve = list(csv.DictReader(rows))
    metrics["chance_cause"] = likely_cause(metrics, training, curve)
    print(chance_warning(variant_name, metrics), file=sys.stderr)


def _write_tables(variant_name: str, labels, probabilities, names) -> None:
    """Per-image predictions, the confusion table and the tables behind the DVC plots."""
    predicted = probabilities.argmax(axis=1)
    write_predictions(layout.predictions_file(variant_name), labels, predicted)
    write_csv(layout.confusion_table(variant_name), confusion_rows(labels, predicted, names))
    for kind, table in PLOT_TABLES.items():
        write_csv(layout.plot_table(kind, variant_name), table(labels, probabilities))


def _plot_figures(trained: TrainedVariant, test: ShardSet, probabilities: np.ndarray) -> None:
    from cnnpipe.evaluate.diagnostics import feature_maps, find_gradcam_layer, gradcam_heatmaps

    variant_name, names, labels = trained.variant, trained.class_names, test.labels
    images = layout.image_dir(variant_name)
    predicted = probabilities.argmax(axis=1)
    plot_confusion_matrix(
        confusion_counts(labels, predicted, trained.num_classes), names,
        images / "confusion_matrix.png", title=f"{variant_name}: confusion matrix (row-normalized)",
    )
    plot_reliability_diagram(labels, probabilities, images / "reliability.png",
                             title=f"{variant_name}: reliability")
    # Evenly spaced over the test split, whose order is fixed: the same images every run, and
    # every class even when a folder source stored the split sorted by class.
    sample = np.linspace(0, len(labels) - 1, min(GALLERY, len(labels))).astype(int)
    gallery = test.read(sample)
    plot_prediction_grid(gallery, labels[sample], probabilities[sample], names,
                         images / "predictions.png", n=GALLERY,
                         title=f"{variant_name}: predictions")
    plot_confident_mistakes(test.read, labels, probabilities, names,
                            images / "confident_mistakes.png", n=GALLERY,
                            title=f"{variant_name}: most confident mistakes")
    layer = find_gradcam_layer(trained.model)
    heatmaps = gradcam_heatmaps(trained.model, gallery, layer=layer)
    plot_gradcam_grid(gallery, heatmaps, labels[sample], probabilities[sample], names,
                      images / "gradcam.png", title=f"{variant_name}: Grad-CAM at {layer}")
    plot_feature_maps(feature_maps(trained.model, gallery[0]), images / "feature_maps.png",
                      image=gallery[0], title=f"{variant_name}: feature maps")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/evaluate.py VARIANT")
    run(main, sys.argv[1])
