"""Training noise: how far retraining alone moves each variant's test accuracy.

    python bench/training_noise.py [--seeds 43,44,45] [--repo PATH] [--variants a,b]

For each extra seed, the repository's code is copied into a temporary folder (no outputs, no
dvc.lock; the data's local input hard-linked in), params.yaml's ``seed`` line is changed and
nothing else, and ``dvc repro evaluate@<variant> ...`` runs there, as on a fresh clone. With
the repository's own committed accuracy (its own seed), the runs go to
``reports/training_noise.json`` in the repository: per variant the seeds, test accuracies,
their mean and sample standard deviation, the number of test images each accuracy is over,
the git revision, date and CPU, and a fingerprint of the settings they belong to
(cnnpipe.report.noise). Commit that file: `cnnpipe report --base REV` reads it from REV and
calls a new accuracy a real change only when it is no likely retrain of those settings.

Run after `dvc repro`, with the results committed. The seed drives the split, the weight
initialisation and the shuffling, so every stage re-runs per seed: the default nine variants
take about 11 minutes per seed on the 2-core machine. ``measure_noise`` is the same run from
Python (tests/test_training_noise.py uses it on a tiny repository).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from cnnpipe.core.errors import CnnpipeError  # noqa: E402
from cnnpipe.report.dvc_reading import find_dvc  # noqa: E402
from cnnpipe.report.noise import (  # noqa: E402
    MIN_RUNS,
    NOISE_RECORD,
    noise_entry,
    settings_fingerprint,
    working_tree,
    write_noise_record,
)

# Four runs with the committed one: three can agree closely by chance on a heavy-tailed spread
# (the report's floor, the test set's sampling error, guards against that too).
DEFAULT_SEEDS = (43, 44, 45)
# Stage outputs: each seed's copy makes its own. data/ holds the inputs DVC tracks (linked in
# below) and what prepare writes.
OUTPUT_PREFIXES = ("data/", "metrics/", "plots/", "reports/", "models/", "dvclive/", ".cnnpipe/")
SEED_LINE = re.compile(r"^(seed:[ \t]*)([^#\n]*?)([ \t]*(?:#.*)?)$", re.M)


class NoiseError(CnnpipeError):
    """The repository cannot be measured as it stands, or a seed's run failed."""


def _env() -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    return {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(cwd: Path, args: list[str], timeout: float | None = None) -> str:
    command = " ".join([Path(args[0]).name, *args[1:]])
    try:
        done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NoiseError(f"`{command}` still running after {timeout} s in {cwd}") from None
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-2000:]
        raise NoiseError(f"`{command}` failed ({done.returncode}) in {cwd}:\n{tail}")
    return done.stdout


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise NoiseError(f"{path} not readable: {what}") from None


def with_seed(params_text: str, seed: int) -> str:
    """params.yaml's text with the top-level ``seed`` set to ``seed``, every other byte kept
    (a YAML round trip would rewrite values such as ``1e-4`` that DVC reads as numbers)."""
    changed, count = SEED_LINE.subn(lambda m: f"{m[1]}{seed}{m[3]}", params_text, count=1)
    if count != 1 or yaml.safe_load(changed).get("seed") != seed:
        raise NoiseError("params.yaml has no top-level `seed: N` line to change")
    return changed


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # the data is read, never written: no need for a second copy
    except OSError:
        shutil.copy2(source, target)


def _source_files(repo: Path) -> list[str]:
    listed = _run(repo, ["git", "ls-files", "--cached", "--others", "--exclude-standard"])
    return [name for name in listed.splitlines()
            if name and name != "dvc.lock" and not name.startswith(OUTPUT_PREFIXES)
            and (repo / name).is_file()]


def _local_inputs(repo: Path, params: dict) -> list[str]:
    """The data's local input and download folders, relative paths inside the repository."""
    data = params.get("data") or {}
    candidates = [data.get("input")] + [(data.get(section) or {}).get("download_dir")
                                        for section in ("archive", "fashion_mnist")]
    found = []
    for name in candidates:
        if isinstance(name, str) and not Path(name).is_absolute() and (repo / name).exists():
            if not name.startswith("resolved/") and name not in found:
                found.append(name)
    return found


def make_seed_copy(repo: Path, dest: Path, seed: int) -> Path:
    """``repo``'s code and params in ``dest`` as a fresh git repository, ``seed`` changed."""
    for name in _source_files(repo):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)
    params_text = (repo / "params.yaml").read_text()
    (dest / "params.yaml").write_text(with_seed(params_text, seed))
    git = ["git", "-c", "user.name=training-noise", "-c", "user.email=noise@localhost"]
    _run(dest, ["git", "init", "-q"])
    _run(dest, ["git", "add", "-A"])
    _run(dest, [*git, "commit", "-qm", f"seed {seed}"])  # DVCLive needs a commit
    # After the commit: the data stays out of git, as DVC keeps it out in the repository.
    for name in _local_inputs(repo, yaml.safe_load(params_text)):
        source, target = repo / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(source), str(target))
    return dest


def _test_images(repo: Path, variant: str) -> int:
    """How many test images ``evaluate`` scored the accuracy on."""
    evaluation = _read_json(repo / f"reports/evaluation/{variant}.json", "run `dvc repro` first")
    return int(evaluation["num_test_images"])


def own_runs(repo: Path, variants: list[str], dvc: str) -> dict:
    """The repository's committed results: its seed, revision, and per variant the accuracy,
    CPU, number of test images and settings fingerprint. Refuses results that `dvc repro`
    would change."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    unknown = sorted(set(variants) - set(params.get("models") or {}))
    if unknown:
        raise NoiseError(f"not variants in {repo}/params.yaml: {', '.join(unknown)}")
    status = json.loads(_run(repo, [dvc, "status", "--with-deps", "--json",
                                    *(f"evaluate@{v}" for v in variants)]) or "{}")
    if status:
        raise NoiseError(f"the results in {repo} are not those of its params and code "
                         f"(`dvc status` lists {', '.join(sorted(status))}): run `dvc repro` "
                         "and commit first")
    files = working_tree(repo)
    runs = {}
    for variant in variants:
        metrics = _read_json(repo / f"metrics/{variant}.json", "run `dvc repro` first")
        training = _read_json(repo / f"metrics/train/{variant}.json", "run `dvc repro` first")
        fingerprint = settings_fingerprint(files, variant)
        if fingerprint is None:
            raise NoiseError(f"no resolved/train/{variant}.json in {repo}: run `dvc repro` first")
        runs[variant] = {"seed": params["seed"], "accuracy": metrics["accuracy"],
                         "cpu": (training.get("environment") or {}).get("cpu"),
                         "test_images": _test_images(repo, variant),
                         "fingerprint": fingerprint}
    revision = _run(repo, ["git", "rev-parse", "HEAD"]).strip()
    return {"seed": params["seed"], "revision": revision, "runs": runs}


def seed_runs(repo: Path, seed: int, fingerprints: dict[str, str], dvc: str,
              workdir: Path | None = None, timeout: float | None = None) -> dict[str, dict]:
    """Per variant ``{"seed", "accuracy", "cpu"}`` of a fresh run with ``seed``; refuses a run
    whose resolved settings are not the repository's (other than the seed)."""
    with tempfile.TemporaryDirectory(prefix=f"training-noise-{seed}-", dir=workdir) as folder:
        copy = make_seed_copy(repo, Path(folder), seed)
        _run(copy, [dvc, "repro", *(f"evaluate@{v}" for v in fingerprints)], timeout=timeout)
        files, runs = working_tree(copy), {}
        for variant, fingerprint in fingerprints.items():
            if settings_fingerprint(files, variant) != fingerprint:
                raise NoiseError(f"seed {seed}: {variant} resolved other settings than in {repo}")
            metrics = _read_json(copy / f"metrics/{variant}.json", "the run wrote no metrics")
            training = _read_json(copy / f"metrics/train/{variant}.json", "no training record")
            runs[variant] = {"seed": seed, "accuracy": metrics["accuracy"],
                             "cpu": (training.get("environment") or {}).get("cpu"),
                             "test_images": _test_images(copy, variant)}
        return runs


def _one_test_size(variant: str, runs: list[dict]) -> int:
    sizes = sorted({run["test_images"] for run in runs})
    if len(sizes) != 1:  # the floor of the spread would belong to no one test set
        raise NoiseError(f"{variant}: the seeds scored test sets of different sizes "
                         f"({', '.join(map(str, sizes))} images)")
    return sizes[0]


def measure_noise(repo: Path, seeds: list[int], variants: list[str] | None = None,
                  workdir: Path | None = None, timeout: float | None = None, log=print) -> dict:
    """Retrain with each of ``seeds`` and write the record; returns it."""
    repo, dvc = Path(repo).resolve(), find_dvc()
    if variants is None:
        variants = list(yaml.safe_load((repo / "params.yaml").read_text())["models"])
    own = own_runs(repo, variants, dvc)
    if own["seed"] in seeds or len(set(seeds)) != len(seeds):
        raise NoiseError(f"--seeds must be distinct and differ from params.yaml's {own['seed']}")
    fingerprints = {v: own["runs"][v]["fingerprint"] for v in variants}
    measured = {v: [{k: own["runs"][v][k] for k in ("seed", "accuracy", "cpu", "test_images")}]
                for v in variants}
    for seed in seeds:
        start = time.perf_counter()
        log(f"seed {seed}: dvc repro of {len(variants)} variants in a fresh copy ...")
        for variant, run in seed_runs(repo, seed, fingerprints, dvc, workdir, timeout).items():
            measured[variant].append(run)
        log(f"seed {seed}: done in {time.perf_counter() - start:.0f} s")
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entries = {v: noise_entry(fingerprints[v], measured[v], own["revision"], date,
                              _one_test_size(v, measured[v])) for v in variants}
    return write_noise_record(repo, entries)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)),
                        help="extra seeds, comma-separated (default: %(default)s)")
    parser.add_argument("--repo", default=str(REPO), help="the repository (default: this one)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants (default: every one in params.yaml)")
    parser.add_argument("--workdir", default=None,
                        help="where the per-seed copies go (default: the system temp folder)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds takes whole numbers separated by commas, not {args.seeds!r}",
              file=sys.stderr)
        return 2
    variants = [v for v in args.variants.split(",") if v] if args.variants else None
    try:
        record = measure_noise(Path(args.repo), seeds, variants,
                               Path(args.workdir) if args.workdir else None)
    except CnnpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, entry in record["variants"].items():
        spread = "n/a" if entry["std"] is None else f"{entry['std']:.4f}"
        print(f"{name:22s} runs {entry['runs']}  mean {entry['mean']:.4f}  s {spread}  "
              f"test images {entry.get('test_images') or 'n/a'}  "
              f"accuracies {', '.join(f'{a:.4f}' for a in entry['accuracies'])}")
    print(f"wrote {Path(args.repo) / NOISE_RECORD} (commit it; `cnnpipe report` needs "
          f"{MIN_RUNS} runs or more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
