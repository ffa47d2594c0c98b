"""Every default variant on two small real folders, as a user would run them.

    python bench/small_folders.py [--folders digits,photos] [--variants all]
                                  [--set train.key=value ...] [--workdir DIR]

The folders are built from data that ships with packages (no synthetic noise):

- digits: 200 of scikit-learn's handwritten digits (20 a class, 10 classes, gray PNGs);
- photos: 60 crops a class of three of scikit-image's sample photos (RGB, 96-256 px,
  PNG, JPEG, WebP and BMP in turn); scikit-image comes with the bench extra
  (`.venv/bin/pip install -e '.[bench]'`), not with `make setup`.

For each folder a copy of this repository (its code, no outputs) gets the default
params.yaml with only the data source changed, and `dvc repro` runs it (exports off: they do
not change a score). ``--set`` changes a param for the study of a setting (for example
``--set train.early_stopping_patience=0``); ``--workdir`` keeps the copies, so a second run
with other settings re-trains without preparing again. Each run copies the current code in,
and every setting, the seed included, starts again from the committed params.yaml. Printed
per folder and variant: test accuracy, whether evaluate flagged it near chance, epochs run
and the epoch whose weights were kept, and the gap to simple_cnn (the acceptance bar: within
0.10 unless flagged).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures import write_digits_folder, write_photo_crops_folder  # noqa: E402
from pipeline_repo import copy_code, dvc, make_tiny_repo, run  # noqa: E402

FOLDERS = {
    "digits": lambda root: write_digits_folder(root, per_class=20),
    "photos": lambda root: write_photo_crops_folder(root, per_class=60),
}


def parse_value(text: str):
    return yaml.safe_load(text)


def apply_sets(params: dict, sets: list[str]) -> None:
    for item in sets:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(value)


def folder_repo(workdir: Path, folder: str, variants: list[str] | None) -> Path:
    """A copy of the code with the default params and ``folder`` as its image folder."""
    repo = workdir / folder
    if repo.exists():
        copy_code(repo, keep=("params.yaml",))  # the code as it is now
        return repo
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    models = {name: spec for name, spec in defaults["models"].items()
              if variants is None or name in variants}
    repo.mkdir(parents=True)
    make_tiny_repo(repo, models)
    FOLDERS[folder](repo / "data/images")
    return repo


def write_params(repo: Path, sets: list[str]) -> None:
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # Every section as committed, so settings of an earlier --set do not linger in a kept copy.
    params = {**defaults, "models": {name: defaults["models"][name] for name in params["models"]},
              "export": params["export"]}
    params["data"].update({"source": "image_folder", "input": "data/images"})
    apply_sets(params, sets)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "small folder", check=False)


def results(repo: Path) -> list[dict]:
    names = yaml.safe_load((repo / "params.yaml").read_text())["models"]
    rows = []
    for name in names:
        evaluation = {**json.loads((repo / f"reports/evaluation/{name}.json").read_text()),
                      **json.loads((repo / f"metrics/{name}.json").read_text())}
        train = json.loads((repo / f"metrics/train/{name}.json").read_text())
        rows.append({
            "variant": name,
            "accuracy": evaluation["accuracy"],
            "above_chance": evaluation.get("above_chance"),
            "epochs_run": train.get("epochs_run"),
            "best_epoch": train.get("best_epoch"),
        })
    return rows


def table(folder: str, rows: list[dict], sizes: dict) -> str:
    simple = next((row["accuracy"] for row in rows if row["variant"] == "simple_cnn"), None)
    lines = [f"{folder}: {sizes}", "",
             "| variant | test accuracy | near chance | epochs run | kept epoch | vs simple_cnn |",
             "|---|---:|---|---:|---:|---:|"]
    for row in rows:
        gap = "" if simple is None else f"{row['accuracy'] - simple:+.3f}"
        flag = "FLAGGED" if row["above_chance"] is False else ""
        lines.append(f"| {row['variant']} | {row['accuracy']:.3f} | {flag} | "
                     f"{row['epochs_run']} | {row['best_epoch']} | {gap} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", default="digits,photos")
    parser.add_argument("--variants", default="all")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    variants = None if args.variants == "all" else args.variants.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="small-folders-"))
    print(f"workdir {workdir}, settings {args.sets or 'defaults'}")
    for folder in args.folders.split(","):
        repo = folder_repo(workdir, folder, variants)
        write_params(repo, args.sets)
        dvc(repo, "repro", timeout=7200)
        sizes = json.loads((repo / "data/prepared/data_card.json").read_text())["sizes"]
        print(table(folder, results(repo), sizes), flush=True)


if __name__ == "__main__":
    main()
