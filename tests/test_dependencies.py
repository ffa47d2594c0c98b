"""Declared and locked dependencies: the environment `make` builds is exactly requirements.txt
(every transitive package pinned), and deptry, which `make test` runs, fails on an import that
pyproject.toml does not declare."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# pip-compile leaves these out of a lock (pip-tools calls them unsafe); the venv brings them.
UNLOCKED = {"pip", "setuptools"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        if match:
            pins[_canonical(match.group(1))] = match.group(2)
    return pins


def test_the_environment_is_exactly_the_lock():
    lock = _pins((ROOT / "requirements.txt").read_text().splitlines())
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    installed = {name: version for name, version in _pins(freeze).items()
                 if name not in UNLOCKED and name != "cnnpipe"}
    missing = sorted(set(lock) - set(installed))
    extra = sorted(set(installed) - set(lock))
    moved = sorted(f"{n} {installed[n]} (lock {lock[n]})" for n in set(lock) & set(installed)
                   if installed[n] != lock[n])
    assert not (missing or extra or moved), (
        f"not installed: {missing}; not in the lock: {extra}; other versions: {moved}; "
        "run `make setup` (or `make lock` after editing requirements.in)")


def test_the_lock_pins_every_declared_dependency():
    lock = _pins((ROOT / "requirements.txt").read_text().splitlines())
    declared = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(),
                         re.S | re.M).group(1)
    names = [_canonical(re.split(r"[<>=\[ ]", n)[0]) for n in re.findall(r'"([^"]+)"', declared)]
    assert names and not [name for name in names if name not in lock]


def test_deptry_fails_on_an_import_that_only_comes_through_another_package(tmp_path):
    """How pydantic, ruamel.yaml, scipy and vl_convert were imported before they were declared."""
    project = tmp_path / "project"
    (project / "src/toy").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "toy"\nversion = "0"\ndependencies = ["numpy"]\n')
    (project / "src/toy/__init__.py").write_text("import numpy\nimport yaml\n")
    done = subprocess.run([str(VENV_BIN / "deptry"), "--no-ansi", "src"], cwd=project,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DEP003 'yaml' imported but it is a transitive dependency" in \
        done.stdout + done.stderr


def test_deptry_passes_on_this_project():
    done = subprocess.run([str(VENV_BIN / "deptry"), "--no-ansi", "src", "stages"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
