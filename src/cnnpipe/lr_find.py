"""``cnnpipe lr-find VARIANT``: the learning-rate range test (Smith 2015, made standard by
fastai's ``lr_find``).

The variant is built and fed exactly as train@<variant> would (its resolved settings, the
prepared training shards, the model normalizing inside), then trained for at most ``steps``
batches while the rate grows exponentially from ``start`` to ``end``. The loss of each batch is
smoothed (an exponential moving average with bias correction, as fastai does); the sweep stops
early once the smoothed loss exceeds ``divergence`` times its minimum. The suggested rate is
where the smoothed loss falls fastest against log(rate), before its minimum: the largest rate
that still learns quickly. It is a starting point for ``learning_rate`` in params.yaml, not a
substitute for a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnpipe.core.errors import TrainingError

SMOOTHING = 0.98  # fastai's beta: the loss of one batch is noisy
MIN_STEPS_BEFORE_STOP = 10
# No optimizer here learns at a rate above 100, nor notices one below 1e-12; a sweep longer
# than 10,000 batches is a typo, not a range test (fastai's default is 100).
LOWEST_RATE, HIGHEST_RATE, MAX_STEPS = 1e-12, 100.0, 10_000


@dataclass
class RangeTest:
    rates: np.ndarray  # the rate of each batch run
    losses: np.ndarray  # its raw loss
    smoothed: np.ndarray  # bias-corrected moving average
    suggested: float  # steepest fall of the smoothed loss, before its minimum
    minimum: float  # rate at the smoothed loss's minimum
    diverged_at: float | None  # first rate whose smoothed loss passed divergence x minimum

    def rows(self) -> list[dict]:
        return [
            {"learning_rate": float(r), "loss": float(l), "smoothed_loss": float(s)}
            for r, l, s in zip(self.rates, self.losses, self.smoothed, strict=True)
        ]


def sweep_rates(start: float, end: float, steps: int) -> np.ndarray:
    if not (math.isfinite(start) and math.isfinite(end) and 0 < start < end):
        raise ValueError(f"need 0 < start < end, got start={start:g}, end={end:g}")
    if start < LOWEST_RATE or end > HIGHEST_RATE:
        raise ValueError(f"rates must lie within {LOWEST_RATE:g}..{HIGHEST_RATE:g}, got "
                         f"start={start:g}, end={end:g}")
    if not 2 * MIN_STEPS_BEFORE_STOP <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be {2 * MIN_STEPS_BEFORE_STOP} to {MAX_STEPS}, got {steps}")
    return start * (end / start) ** (np.arange(steps) / (steps - 1))


def suggest(rates: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
    """(steepest-descent rate before the minimum, rate at the minimum).

    A suggestion at either end of the sweep is refused: at the first rate the loss never
    fell (the sweep started too high), at the last it was still falling (it ended too low),
    and either way the best rate lies outside what was tried."""
    lowest = int(np.argmin(smoothed))
    steepest = 0
    if lowest >= 2:
        slopes = np.gradient(smoothed[: lowest + 1], np.log(rates[: lowest + 1]))
        steepest = int(np.argmin(slopes))
    if steepest == 0:
        raise TrainingError(f"the loss did not fall from the sweep's first rate ({rates[0]:g}); "
                            "start the sweep lower (--start)")
    if steepest == len(rates) - 1:
        raise TrainingError(f"the loss still fell fastest at the sweep's last rate "
                            f"({rates[-1]:g}); end the sweep higher (--end)")
    return float(rates[steepest]), float(rates[lowest])


def range_test(
    model, dataset, num_classes: int, recipe: dict, *,
    start: float = 1e-7, end: float = 10.0, steps: int = 100, divergence: float = 4.0,
) -> RangeTest:
    """Run the sweep on ``model`` (changed in place: build a fresh one to train for real)."""
    from cnnpipe.train.fused_norm import fused_batch_norm
    from cnnpipe.train.training import compile_model

    rates = sweep_rates(start, end, steps)
    # The recipe's optimizer; the schedule is the sweep itself. The loss is the plain
    # cross-entropy: label smoothing lifts its floor so far (about 0.5 for 10 classes at 0.1)
    # that a net gone to uniform outputs (2.3) never reads as `divergence` x the minimum. No
    # weight decay: Keras scales it by the rate, so at the sweep's high rates it alone would
    # wipe the weights (20% a step at rate 10 with 0.02) and the sweep would measure the decay.
    compile_model(model, num_classes, float(rates[0]), {
        **recipe, "lr_schedule": "constant", "warmup_epochs": 0.0, "label_smoothing": 0.0,
        "weight_decay": 0.0,
    }, one_hot=dataset.element_spec[1].shape.rank == 2)
    batches = iter(dataset.repeat())
    losses, smoothed = [], []
    average, best, diverged_at = 0.0, math.inf, None
    with fused_batch_norm():  # as training runs it
        for step, rate in enumerate(rates):
            model.optimizer.learning_rate = float(rate)
            images, labels = next(batches)
            model.reset_metrics()  # so the reported loss is this batch's, not a running mean
            loss = float(model.train_on_batch(images, labels, return_dict=True)["loss"])
            if not math.isfinite(loss):
                diverged_at = float(rate)
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            value = average / (1 - SMOOTHING ** (step + 1))
            losses.append(loss)
            smoothed.append(value)
            best = min(best, value)
            if step >= MIN_STEPS_BEFORE_STOP and value > divergence * best:
                diverged_at = float(rate)
                break
    if len(smoothed) < 3:
        raise TrainingError(
            f"the loss diverged within {len(smoothed) + 1} steps of the sweep (at rate "
            f"{rates[len(smoothed)]:g}); start the sweep lower"
        )
    tried = rates[: len(smoothed)]
    smoothed_array = np.asarray(smoothed)
    suggested, minimum = suggest(tried, smoothed_array)
    return RangeTest(tried, np.asarray(losses), smoothed_array, suggested, minimum, diverged_at)


def lr_find(plan, **sweep) -> RangeTest:
    """The range test on a built variant (a :class:`cnnpipe.train.build.TrainingPlan`), fed
    exactly as its training would be; the plan's model is changed: build a fresh one to train."""
    return range_test(plan.model, plan.train_ds, plan.data.num_classes, plan.settings, **sweep)


def plot_range_test(result: RangeTest, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnpipe.core.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(result.rates, result.losses, color="0.75", linewidth=0.8, label="batch loss")
    ax.plot(result.rates, result.smoothed, color="C0", label="smoothed loss")
    ax.axvline(result.suggested, color="C3", linestyle="--",
               label=f"suggested {result.suggested:.2g}")
    if result.diverged_at is not None:
        ax.axvline(result.diverged_at, color="0.4", linestyle=":",
                   label=f"diverged at {result.diverged_at:.2g}")
    ax.set_xscale("log")
    upper = np.percentile(result.smoothed, 95) * 1.5
    ax.set_ylim(min(result.smoothed.min(), result.losses.min()) * 0.9, upper)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def run_lr_find(variant: str, out_dir: Path, *, start: float, end: float, steps: int) -> RangeTest:
    """The range test for ``variant`` of params.yaml on the prepared data; writes
    ``<out_dir>/<variant>.png`` and ``.csv``."""
    from cnnpipe.core import layout
    from cnnpipe.core.io import write_csv
    from cnnpipe.params import load_params
    from cnnpipe.params.resolve import train_config
    from cnnpipe.train.build import TrainingData, build_variant

    config = train_config(load_params(layout.PARAMS), variant)
    # The sweep is about the target task's rate: no source task first, and one process.
    plan = build_variant(config, TrainingData.open(), pretrain=False, variant=variant,
                         distribute=False)
    result = lr_find(plan, start=start, end=end, steps=steps)
    settings = plan.settings
    write_csv(Path(out_dir) / f"{variant}.csv", result.rows())
    plot_range_test(result, Path(out_dir) / f"{variant}.png",
                    f"{variant}: learning-rate range test, batch {settings['batch_size']}")
    return result


def add_lr_find_parser(subparsers) -> None:
    import argparse

    parser = subparsers.add_parser(
        "lr-find",
        help="sweep the learning rate of a variant and suggest one",
        description=__doc__.split("\n\n")[0].replace("\n", " ") + "\n\n"
        + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("variant", metavar="VARIANT", help="a name under `models:` in params.yaml")
    parser.add_argument("--start", type=float, default=1e-7, help="first rate (default: %(default)g)")
    parser.add_argument("--end", type=float, default=10.0, help="last rate (default: %(default)g)")
    parser.add_argument("--steps", type=int, default=100,
                        help=f"batches in the sweep, at most (default: %(default)s; "
                             f"{2 * MIN_STEPS_BEFORE_STOP} to {MAX_STEPS})")
    parser.add_argument("--out", default="reports/lr_find", metavar="DIR",
                        help="where the plot and the table go (default: %(default)s)")
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    from cnnpipe.core.errors import ConfigError
    from cnnpipe.core.runner import quiet_native_logs

    try:
        sweep_rates(args.start, args.end, args.steps)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with quiet_native_logs():
        result = run_lr_find(args.variant, Path(args.out), start=args.start, end=args.end,
                             steps=args.steps)
    ended = (f"the loss diverged at {result.diverged_at:.2g}" if result.diverged_at is not None
             else f"no divergence up to {result.rates[-1]:.2g}")
    print(f"{args.variant}: suggested learning rate {result.suggested:.2g} "
          f"(steepest fall of the loss; lowest loss at {result.minimum:.2g}; {ended})")
    print(f"plot: {Path(args.out) / (args.variant + '.png')}")
    return 0
