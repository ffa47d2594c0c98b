"""Stage evaluate@<variant>: test-set metrics, confusion data and confusion-matrix figure.

params: none (everything comes from the model card written by train@<variant>)
"""

import sys

from cnnpipe import layout
from cnnpipe.evaluation import (
    as_class_probabilities,
    classification_metrics,
    confusion_counts,
    confusion_rows,
)
from cnnpipe.io import load_split, read_json, write_csv, write_json
from cnnpipe.plots import plot_confusion_matrix
from cnnpipe.runner import run


def main(variant_name: str) -> None:
    from cnnpipe.inference import load_trained_model, predict_outputs
    from cnnpipe.training import count_parameters

    card = read_json(layout.model_card(variant_name))
    test = load_split(layout.PROCESSED / "test.npz")
    model = load_trained_model(card, layout.weights_file(variant_name))
    outputs = predict_outputs(model, test.images)

    metrics = classification_metrics(test.labels, outputs, card["class_names"])
    # Trainable counts depend on the training phase; metrics/train/<variant>.json has them.
    metrics["total_params"] = count_parameters(model)[0]
    write_json(layout.eval_metrics(variant_name), metrics)

    predicted = as_class_probabilities(outputs).argmax(axis=1)
    write_csv(layout.confusion_table(variant_name),
              confusion_rows(test.labels, predicted, card["class_names"]))
    plot_confusion_matrix(
        confusion_counts(test.labels, predicted, card["num_classes"]), card["class_names"],
        layout.image_dir(variant_name) / "confusion_matrix.png",
        title=f"{variant_name}: confusion matrix (row-normalized)",
    )
    print(f"{variant_name}: test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/evaluate.py VARIANT")
    run(main, sys.argv[1])
