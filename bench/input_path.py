"""Training throughput of this checkout's input path against another checkout's, interleaved.

    python bench/input_path.py --old PATH [--variants simple_cnn,regularized_cnn]
                               [--repeats 3] [--images 20000]

Runs ``bench/variant_cost.py`` (one epoch per variant, the checkout's own data path and
models) alternately in the old checkout and in this one, ``--repeats`` times, and prints
each run's images/s, the medians and their ratio (new / old). Interleaving spreads the
machine's drift (+-40% on shared 2-core machines) over both sides. Each checkout needs its
own prepared data first (`dvc repro preprocess` in it): the formats differ between commits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def images_per_second(checkout: Path, variant: str, images: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "bench/variant_cost.py", "--images", str(images), "--variants", variant],
        cwd=checkout, env=env, capture_output=True, text=True, check=False,
    )
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(variant)]
    if result.returncode != 0 or not rows:
        sys.exit(f"variant_cost.py failed in {checkout}:\n{result.stderr[-2000:]}")
    return float(rows[-1][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--variants", default="simple_cnn,regularized_cnn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=20000)
    args = parser.parse_args()

    old, new = args.old.resolve(), HERE
    print(f"{'variant':18s} {'run':>3s} {'old img/s':>10s} {'new img/s':>10s}")
    for variant in [v for v in args.variants.split(",") if v]:
        rates = {"old": [], "new": []}
        for repeat in range(1, args.repeats + 1):
            for side, checkout in (("old", old), ("new", new)):
                rates[side].append(images_per_second(checkout, variant, args.images))
            print(f"{variant:18s} {repeat:>3d} {rates['old'][-1]:>10.0f} {rates['new'][-1]:>10.0f}",
                  flush=True)
        old_median, new_median = statistics.median(rates["old"]), statistics.median(rates["new"])
        print(f"{variant:18s} median {old_median:>7.0f} {new_median:>10.0f}   "
              f"ratio new/old {new_median / old_median:.3f}", flush=True)


if __name__ == "__main__":
    main()
