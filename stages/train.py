"""Stage train@<variant>: build the variant, fit it, save model, card, metrics and curves.

settings: resolved/train/<variant>.json (seed, the shared train settings with the variant's
overrides, every hyperparameter), written by the params stage

Under ``train.strategy: multi_worker`` every worker runs this script with its own TF_CONFIG
(the chief through `dvc repro -s train@<variant>`); only the chief writes outputs.
"""

import sys

from cnnpipe.core import layout
from cnnpipe.core.runner import run
from cnnpipe.core.settings import read_settings


def main(variant_name: str) -> None:
    from cnnpipe.train.build import TrainingData, build_variant, train_variant
    from cnnpipe.train.distribute import DEFAULT
    from cnnpipe.train.resume import ResumeStore, run_fingerprint
    from cnnpipe.train.saving import save_trained

    config = read_settings(layout.resolved_train(variant_name))
    plan = build_variant(config, TrainingData.open(), variant=variant_name)
    _say_if_early_stopping_off(variant_name, config, plan)
    # A killed run goes on from its last epoch. Only one process on one device yet: replaying
    # the shuffle under a strategy's distributed dataset is unverified (docs/distributed.md).
    resume = None
    if plan.distribution.name == DEFAULT:
        resume = ResumeStore(variant_name, run_fingerprint(variant_name))
        resume.announce()
    result = train_variant(plan, resume=resume)
    save_trained(plan, result)
    if resume is not None:
        resume.remove()
    print(f"{variant_name}: {result.epochs_run} epochs, best epoch {result.best_epoch}, "
          f"{result.train_seconds:.1f} s")
    task = plan.distribution.task
    if task is not None:
        from cnnpipe.train.distribute import weights_digest

        # Workers must end with the same weights: their logs let anyone compare.
        role = "chief, wrote the outputs" if task.is_chief else "wrote nothing"
        print(f"{variant_name}: {task.task_type} {task.index} of {task.workers} ({role}), "
              f"weights sha256 {weights_digest(plan.model)}")


def _say_if_early_stopping_off(variant_name: str, config, plan) -> None:
    asked = config.train["early_stopping_patience"]
    if asked and not plan.settings["early_stopping_patience"]:
        print(f"{variant_name}: early stopping off: {len(plan.data.val)} validation images, "
              f"fewer than train.early_stopping_min_val_images="
              f"{plan.settings['early_stopping_min_val_images']}; every epoch runs and the "
              "last weights are kept")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/train.py VARIANT")
    run(main, sys.argv[1])
