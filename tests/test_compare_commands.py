"""The documented commands for comparing runs (README and docs/experiments.md), run as written on the real dvc.yaml and
params.yaml with headline metrics for every default variant (no training: DVC reads only the
files), and the training records beside them that must not show up."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
# Where the compare commands are written: the README's tour and the experiments page.
SECTIONS = {"README.md": ("## A tour of the everyday commands",),
            "docs/experiments.md": ("## Change a parameter and compare", "## Experiment workflow")}
CHANGED = "simple_cnn"


def readme_commands() -> list[str]:
    """The `dvc metrics ...` and `dvc exp show ...` lines of the documented compare sections."""
    sections = ""
    for page, titles in SECTIONS.items():
        text = (ROOT / page).read_text()
        sections += "".join(text.split(title, 1)[1].split("\n## ", 1)[0] for title in titles)
    commands = []  # in page order; the tour repeats some
    for block in re.findall(r"```sh\n(.*?)```", sections, re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command.startswith(("dvc metrics ", "dvc exp show")):
                commands.append(command)
    return commands


def _run(repo: Path, *args: str) -> str:
    done = subprocess.run([DVC if args[0] == "dvc" else args[0], *args[1:]], cwd=repo,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def _accuracy(index: int) -> float:
    return round(0.8012 + index / 100, 4)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Every default variant's headline metrics committed, then one variant's changed in the
    workspace (what `dvc exp run -S models.simple_cnn....` leaves behind)."""
    path = tmp_path_factory.mktemp("compare") / "repo"
    path.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, path / name)
    variants = list(yaml.safe_load((ROOT / "params.yaml").read_text())["models"])
    for index, variant in enumerate(variants):
        headline = {"accuracy": _accuracy(index), "macro_f1": 0.8, "loss": 0.5, "ece": 0.02,
                    "total_params": 10_000 + index}
        (path / "metrics/train").mkdir(parents=True, exist_ok=True)
        (path / f"metrics/{variant}.json").write_text(json.dumps(headline))
        # What train@<variant> writes: long strings and timings, not headline numbers.
        (path / f"metrics/train/{variant}.json").write_text(json.dumps({
            "train_seconds": 100.0 + index,
            "environment": {"cpu": "AMD EPYC 7B13 64-Core Processor " * 4, "tensorflow": "2.21.0"},
        }))
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                  "commit", "-qm", "baseline"]):
        _run(path, *args)
    changed = json.loads((path / f"metrics/{CHANGED}.json").read_text())
    changed["accuracy"] = 0.7777
    (path / f"metrics/{CHANGED}.json").write_text(json.dumps(changed))
    return path, variants


def test_readme_lists_the_commands_this_module_runs():
    commands = readme_commands()
    assert {"dvc metrics show", "dvc metrics diff"} <= set(commands)
    assert len({c for c in commands if c.startswith("dvc exp show")}) == 2


@pytest.mark.parametrize("command", sorted(set(readme_commands())))
def test_readme_compare_command_runs_and_shows_headline_accuracy(repo, command):
    path, variants = repo
    output = _run(path, *shlex.split(command))
    assert "environment" not in output and "train_seconds" not in output
    lines = output.rstrip("\n").splitlines()
    if command == "dvc metrics diff":
        # Only the variant whose metrics moved, and only its changed headline number.
        assert len(lines) == 2, output  # the header and one row
        assert f"metrics/{CHANGED}.json" in output and "0.7777" in output
        return
    for index, variant in enumerate(variants):
        if variant != CHANGED:
            assert f"{_accuracy(index)}" in output, (variant, output)
    assert "0.7777" in output
    if command == "dvc metrics show":
        assert len(lines) <= 12, output
        assert max(map(len, lines)) <= 200, output


def test_metrics_diff_against_the_previous_commit_lists_only_the_changed_variant(repo, tmp_path):
    path, _ = repo
    clone = tmp_path / "clone"
    shutil.copytree(path, clone)
    _run(clone, "git", "-c", "user.name=t", "-c", "user.email=t@example.com",
         "commit", "-qam", "simple_cnn changed")
    output = _run(clone, "dvc", "metrics", "diff", "HEAD~1")
    rows = output.strip().splitlines()[1:]
    assert rows and all(row.startswith(f"metrics/{CHANGED}.json") for row in rows), output
