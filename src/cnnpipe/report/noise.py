"""Does a change beat the noise of training? The record of how far retraining alone moves each
variant's test accuracy, and the verdict that weighs a new accuracy against it.

``bench/training_noise.py`` retrains the committed settings with other seeds and writes
:data:`NOISE_RECORD` (tracked in git, not a DVC output); ``cnnpipe report`` reads it from the
base revision. Each variant's entry carries a fingerprint of the settings its accuracies
belong to, so a record left behind by older settings is never used for new ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Callable

from cnnpipe.core.io import write_json
from cnnpipe.report.revisions import git_bytes
from cnnpipe.report.significance import ALPHA, holm

NOISE_RECORD = "reports/training_noise.json"
# Two runs give a standard deviation with one degree of freedom: a t of 12.7 is needed for
# p < 0.05, so almost nothing could be called real. Three is the least that says anything.
MIN_RUNS = 3
MEASURE_COMMAND = "python bench/training_noise.py"
RECORD_FORMAT = 1

# A repository path -> its bytes (None when absent): the working tree or a git revision.
Reader = Callable[[str], "bytes | None"]


def working_tree(root: Path) -> Reader:
    def read(path: str) -> bytes | None:
        target = Path(root) / path
        return target.read_bytes() if target.is_file() else None
    return read


def at_revision(repo: Path, rev: str) -> Reader:
    # Every variant's fingerprint reads the same data settings and lock file: one git call each.
    return lru_cache(maxsize=None)(lambda path: git_bytes(repo, rev, path))


def _parse_yaml(content: bytes):
    from ruamel.yaml import YAML  # as DVC reads its lock file

    return YAML(typ="safe").load(content)


def _load(read: Reader, path: str, parse=json.loads):
    from ruamel.yaml.error import YAMLError

    content = read(path)
    if content is None:
        return None
    try:
        return parse(content)
    except (ValueError, YAMLError, UnicodeDecodeError):
        return None


def _data_input_hash(read: Reader, data_input: str | None) -> str | None:
    """The content hash ``dvc.lock`` holds for prepare's local input (an image folder, an
    archive): other images under the same settings are other accuracies. Sources without a
    local input are pinned by their settings (and the checksums in the code)."""
    if not data_input or data_input.startswith("resolved/"):
        return None  # a settings file, seed included: the settings already pin the data
    lock = _load(read, "dvc.lock", _parse_yaml)
    if not isinstance(lock, dict):
        return None
    deps = ((lock.get("stages") or {}).get("prepare") or {}).get("deps") or []
    for dep in deps:
        if isinstance(dep, dict) and dep.get("path") == data_input:
            return dep.get("md5") or dep.get("hash")
    return None


def settings_fingerprint(read: Reader, variant: str) -> str | None:
    """A hash of what a variant's test accuracy depends on, the seed left out: its resolved
    training settings (``resolved/train/<variant>.json``), the data and preprocessing settings,
    and the content of the data's local input. None when the revision has no resolved
    settings for the variant."""
    train = _load(read, f"resolved/train/{variant}.json")
    prepare = _load(read, "resolved/prepare.json")
    if not isinstance(train, dict) or not isinstance(prepare, dict):
        return None
    train = {key: value for key, value in train.items() if key != "seed"}
    data = prepare.get("data") or {}
    settings = {
        "train": train, "data": data,
        "preprocess": _load(read, "resolved/preprocess.json"),
        "data_input": _data_input_hash(read, data.get("input")),
    }
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run_statistics(accuracies: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); no deviation from a single run."""
    import numpy as np

    values = np.asarray(accuracies, dtype=float)
    spread = float(values.std(ddof=1)) if len(values) > 1 else None
    return float(values.mean()), spread


def noise_entry(fingerprint: str, runs: list[dict], revision: str, date: str,
                test_images: int | None = None) -> dict:
    """One variant's record from its runs (``{"seed", "accuracy", "cpu"}``, the repository's
    own seed first): where and on what the accuracies were measured, their spread, and how
    many test images each accuracy is over (the floor of that spread, see
    :func:`effective_spread`)."""
    accuracies = [float(run["accuracy"]) for run in runs]
    mean, spread = run_statistics(accuracies)
    cpus = sorted({str(run.get("cpu") or "unknown") for run in runs})
    return {
        "fingerprint": fingerprint,
        "seeds": [int(run["seed"]) for run in runs],
        "accuracies": accuracies,
        "runs": len(runs),
        "mean": mean,
        "std": spread,
        "test_images": test_images,
        "revision": revision,
        "date": date,
        "cpu": "; ".join(cpus),
    }


def read_noise_record(read: Reader) -> dict | None:
    """``{"variants": {name: entry}}`` from :data:`NOISE_RECORD`; None when absent or not a
    record (an unreadable file judges nothing rather than stopping the report)."""
    record = _load(read, NOISE_RECORD)
    if not isinstance(record, dict) or not isinstance(record.get("variants"), dict):
        return None
    return record


def write_noise_record(repo: Path, entries: dict[str, dict]) -> dict:
    """Write ``entries`` into ``repo``'s record, keeping the entries of variants not measured
    this time (their fingerprints still say what they belong to)."""
    previous = read_noise_record(working_tree(repo))
    variants = dict(previous["variants"]) if previous else {}
    variants.update(entries)
    record = {
        "format": RECORD_FORMAT,
        "what": "test accuracy of each variant retrained with other seeds, every other setting "
                f"as committed: the noise of training ({MEASURE_COMMAND})",
        "variants": {name: variants[name] for name in sorted(variants)},
    }
    write_json(Path(repo) / NOISE_RECORD, record)
    return record


def _test_images(entry: dict) -> int | None | bool:
    """The entry's test-set size; None when not recorded (a record from before it was), False
    when recorded as something other than a positive whole number."""
    size = entry.get("test_images")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        return False
    return size


def sampling_floor(mean: float, test_images: int | None) -> float:
    """The standard error of an accuracy ``mean`` measured on ``test_images`` images (the
    binomial sqrt(m (1 - m) / N)); 0 when the size is unknown."""
    if not test_images:
        return 0.0
    return math.sqrt(mean * (1 - mean) / test_images)


def effective_spread(accuracies: list[float], test_images: int | None) -> float:
    """The spread a verdict uses: the runs' sample standard deviation, but never below the test
    set's own sampling error. A few runs of a heavy-tailed spread can agree closely by chance
    (three digits runs gave s = 0.34 pp, nine gave 1.17 pp, the floor there is 1.2 pp)."""
    mean, spread = run_statistics(accuracies)
    return max(spread or 0.0, sampling_floor(mean, test_images))


def usable_entry(record: dict | None, variant: str,
                 fingerprint: str | None) -> tuple[dict | None, str]:
    """(the entry, "") when the record can judge ``variant`` at its revision, else
    (None, why not): ``no_record``, ``other_settings``, ``too_few_runs`` or ``no_spread``."""
    entry = (record or {}).get("variants", {}).get(variant)
    accuracies = entry.get("accuracies") if isinstance(entry, dict) else None
    if not isinstance(accuracies, list) or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in accuracies):
        return None, "no_record"  # absent, or not an entry this module wrote
    test_images = _test_images(entry)
    if test_images is False:
        return None, "no_record"
    if fingerprint is None or entry.get("fingerprint") != fingerprint:
        return None, "other_settings"
    if len(accuracies) < MIN_RUNS:
        return None, "too_few_runs"
    if effective_spread([float(a) for a in accuracies], test_images) == 0:
        # Runs that tie with no test-set size to bound them (or all at 0 or 1): a spread of 0
        # would make any change certain.
        return None, "no_spread"
    return entry, ""


def noise_p_value(new: float, mean: float, spread: float, runs: int) -> float:
    """Two-sided p of a new accuracy as one more draw from the recorded runs: a prediction
    from ``runs`` runs of mean ``mean`` and standard deviation ``spread`` has the error
    ``spread * sqrt(1 + 1/runs)`` (the new draw's own spread and the mean's uncertainty);
    Student's t with runs - 1 degrees of freedom. A zero spread makes any other value
    certain."""
    from scipy.stats import t as student_t

    if spread == 0:
        return 1.0 if new == mean else 0.0
    t_value = (new - mean) / (spread * math.sqrt(1 + 1 / runs))
    return float(2 * student_t.sf(abs(t_value), runs - 1))


def judge_noise(new_accuracies: dict[str, float], record: dict | None,
                fingerprints: dict[str, str | None]) -> dict[str, dict]:
    """Per variant with a new accuracy: ``{"status": "judged", "p_value", "p_holm", "real",
    "mean", "std" (the runs' sample deviation), "spread" (the one used, see
    :func:`effective_spread`), "floor" (the test set's sampling error, 0 when unknown),
    "runs"}``, or ``{"status": reason}`` (see :func:`usable_entry`). Holm's correction runs
    over the judged variants of this one report."""
    result = {}
    for variant, new in new_accuracies.items():
        entry, reason = usable_entry(record, variant, fingerprints.get(variant))
        if entry is None:
            result[variant] = {"status": reason}
            continue
        accuracies = [float(a) for a in entry["accuracies"]]
        mean, std = run_statistics(accuracies)
        spread = effective_spread(accuracies, entry.get("test_images"))
        result[variant] = {
            "status": "judged", "mean": mean, "std": std, "spread": spread,
            "floor": sampling_floor(mean, entry.get("test_images")), "runs": len(accuracies),
            "p_value": noise_p_value(new, mean, spread, len(accuracies))}
    adjusted = holm({v: r["p_value"] for v, r in result.items() if r["status"] == "judged"})
    for variant, p_holm in adjusted.items():
        result[variant]["p_holm"] = p_holm
        result[variant]["real"] = bool(p_holm < ALPHA)
    return result
