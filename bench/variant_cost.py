"""Training throughput of each variant in params.yaml (or overrides), for sizing the defaults.

Trains every variant for one epoch on a slice of the prepared training split (read from its
shards as the train stage does) and prints images/second and the projected seconds per full
epoch. Run after `dvc repro preprocess`:

    python bench/variant_cost.py [--images 6000] [--variants a,b] [--set KEY=VALUE ...]
                                 [--keras-batchnorm] [--repeats 1]

--set changes params.yaml in memory, as `dvc exp run -S` would, e.g.
`--set models.residual_cnn.stem_strides=1` to time the unstrided stem. BatchNorm trains on
TensorFlow's fused kernel, as the train stage does; --keras-batchnorm times Keras 3's own
layer instead. --repeats times that many epochs per variant and prints each.

Numbers swing +-40% between runs on shared 2-core machines: compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import yaml  # noqa: E402

from cnnpipe.core import layout  # noqa: E402
from cnnpipe.params import parse_params, read_yaml, with_overrides  # noqa: E402
from cnnpipe.params.resolve import train_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--variants", default="")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keras-batchnorm", action="store_true",
                        help="train BatchNorm with Keras' own layer, not the fused kernel")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from cnnpipe.train.fused_norm import fused_batch_norm

    batch_norm = contextlib.nullcontext if args.keras_batchnorm else fused_batch_norm

    from cnnpipe.train.build import TrainingData, build_variant
    from cnnpipe.train.saving import count_parameters
    from cnnpipe.train.training import compile_model

    overrides = [(key, yaml.safe_load(value))
                 for key, _, value in (assignment.partition("=") for assignment in args.set)]
    params = parse_params(with_overrides(read_yaml(layout.PARAMS), overrides))
    data = TrainingData.open()
    full = len(data.train)
    wanted = [v for v in args.variants.split(",") if v] or list(params.models)
    print(f"{'variant':24s} {'params':>10s} {'img/s':>8s} {'s/full epoch':>13s}")
    for name in wanted:
        config = train_config(params, name)  # what train@<name> would read
        config["train"].update(train_images=args.images, min_images_seen=0)
        # The train stage's own build and input (shuffled shards, the model normalizing).
        plan = build_variant(config, data, pretrain=False, variant=name)
        images = len(plan.labelled)
        compile_model(plan.model, data.num_classes, plan.settings["learning_rate"])
        with batch_norm():
            plan.model.fit(plan.train_ds.take(2), epochs=1, verbose=0)  # warm-up: tracing
            for _ in range(args.repeats):
                start = time.perf_counter()
                plan.model.fit(plan.train_ds, epochs=1, verbose=0)
                rate = images / (time.perf_counter() - start)
                print(f"{name:24s} {count_parameters(plan.model)[0]:>10d} {rate:>8.0f} "
                      f"{full / rate:>13.1f}", flush=True)


if __name__ == "__main__":
    main()
