"""Wall-clock time of the whole default pipeline, against issue 3's 20-minute budget.

Re-runs every stage (`dvc repro -f`) and prints the wall time plus each variant's
train_seconds from metrics/train/. Takes about 18 minutes on the 2-core machine; run it
with nothing else busy, since other jobs on the two cores inflate every number:

    python bench/repro_time.py

Results are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

BUDGET_SECONDS = 20 * 60


def main() -> None:
    start = time.perf_counter()
    subprocess.run(["dvc", "repro", "-f"], check=True)
    wall = time.perf_counter() - start
    train = {
        path.stem: json.loads(path.read_text())
        for path in sorted(Path("metrics/train").glob("*.json"))
    }
    for name, record in train.items():
        extra = record.get("pretrain_seconds", 0.0)
        print(f"{name:24s} train {record['train_seconds']:7.1f} s  pretrain {extra:6.1f} s")
    print(f"dvc repro -f: {wall:.0f} s wall clock ({wall / 60:.1f} min; "
          f"budget {BUDGET_SECONDS / 60:.0f} min)")


if __name__ == "__main__":
    main()
