"""What a newcomer and CI run, on a fresh `git clone` of the committed HEAD: the workflow's
steps in order as a pull request runs them (its `make repro` included), then `make repro` on
an image folder tracked with `dvc add`. Each time `dvc status` must be clean afterwards and a
second `make repro` must run no stage.

The clone reuses this suite's environment (its `.venv` is a link to it), so nothing is
installed; the Makefile's own recipe still runs: the preflight check, `dvc repro`, the README
sync. The environment must come out of it untouched: same packages, and the editable install
still pointing at this checkout, not at the clone.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from fixtures import write_digits_folder
from pipeline_repo import ONE_TINY_VARIANT, ROOT, env, run, write_tiny_params
from workflow_runner import load_job, run_job

pytestmark = pytest.mark.slow

SUITE_VENV = Path(sys.prefix)
# make repro on a tiny pipeline takes a minute or two; generous for a loaded machine.
MAKE_TIMEOUT = 1800
DIGITS_KEPT = ("0", "1", "2")


def _environment() -> tuple[str, str]:
    """(pip freeze, where `import cnnpipe` resolves) of the suite's environment."""
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"],
                            capture_output=True, text=True, check=True).stdout
    where = subprocess.run([sys.executable, "-c", "import cnnpipe; print(cnnpipe.__file__)"],
                           capture_output=True, text=True, check=True, cwd="/").stdout
    return freeze, where


def _would_reinstall(repo: Path) -> bool:
    """Whether ``repo``'s Makefile finds its install stamp stale (`make -q`: 0 up to date)."""
    return subprocess.run(["make", "-q", ".venv/.installed"], cwd=repo,
                          capture_output=True).returncode != 0


def make(repo: Path, target: str = "repro") -> subprocess.CompletedProcess:
    return run(repo, "make", target, timeout=MAKE_TIMEOUT)


def _commit_tiny_params(repo: Path) -> None:
    write_tiny_params(repo, ONE_TINY_VARIANT)
    run(repo, "git", "commit", "-qam", "tiny params")


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    before = _environment()
    repo = tmp_path_factory.mktemp("newcomer") / "repo"
    run(ROOT, "git", "clone", "-q", str(ROOT), str(repo))
    (repo / ".venv").symlink_to(SUITE_VENV, target_is_directory=True)
    if _would_reinstall(repo):
        pytest.fail(f"the suite's environment {SUITE_VENV} was not installed from HEAD's lock "
                    "(its .installed stamp holds another hash): run `make setup` first, or "
                    "make would reinstall it from the clone")
    _commit_tiny_params(repo)
    yield repo
    assert _environment() == before, "make on the clone changed the suite's environment"


def _no_stage_ran(output: str) -> bool:
    return "Running stage" not in output


def _assert_clean_and_idempotent(repo: Path) -> None:
    status = run(repo, str(SUITE_VENV / "bin/dvc"), "status", "--json").stdout
    assert json.loads(status) == {}, status
    again = make(repo)
    assert _no_stage_ran(again.stdout), again.stdout[-3000:]


def _not_in_this_run(script: str) -> str | None:
    """Steps that run the test suite itself: running them here would recurse."""
    if re.search(r"\bmake\s+(\S+-)?test\b|pytest", script):
        return "runs the test suite, which is what is running this"
    return None


def _stub_bin(tmp: Path) -> Path:
    """Stand-ins for tools that skipped `uses:` steps install (setup-cml's `cml`): the stub
    records its arguments and fails if a file it is given does not exist."""
    bin_dir = tmp / "stub_bin"
    bin_dir.mkdir()
    cml = bin_dir / "cml"
    cml.write_text('#!/usr/bin/env bash\necho "cml $*" >> "$STUB_LOG"\n'
                   'for a in "$@"; do case "$a" in -*|comment|update) ;; '
                   '*) [ -e "$a" ] || { echo "cml: no $a" >&2; exit 1; } ;; esac; done\n')
    cml.chmod(0o755)
    return bin_dir


def test_the_workflow_steps_pass_on_a_fresh_clone_as_a_pull_request(clone):
    base = run(ROOT, "git", "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    context = {"github": {"event_name": "pull_request", "base_ref": base,
                          "ref": "refs/pull/1/merge", "head_ref": "newcomer"},
               "secrets": {}, "env": {}}
    stubs = _stub_bin(clone.parent)
    base_env = {**env(), "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "CI": "true",
                "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
                "GITHUB_BASE_REF": base, "GITHUB_WORKSPACE": str(clone),
                "STUB_LOG": str(clone.parent / "stub.log")}
    base_env.pop("VIRTUAL_ENV", None)
    job = run_job(load_job(clone / ".github/workflows/ci.yml"), clone, context, base_env,
                  _not_in_this_run, MAKE_TIMEOUT)
    # Warnings reach the run's summary even from an xdist worker, which captures print().
    for result in job.skipped():
        warnings.warn(f"workflow step {result.name!r}: {result.status}", UserWarning, stacklevel=1)
    assert job.ran(), "no step ran"
    for result in job.ran():
        assert result.returncode == 0, f"step {result.name!r} exited {result.returncode}:\n" \
                                       f"{result.output[-4000:]}"
    assert any("make repro" in r.name or r.name == "Pipeline" for r in job.ran())
    report = clone / "report.md"
    assert report.is_file() and report.stat().st_size > 0, "the report to post is missing"
    assert report.read_text() in (clone.parent / "github/step_summary.md").read_text()
    # The comment step ran, on the stand-in for setup-cml's `cml`, with that report.
    assert "cml comment update --target=pr --publish report.md" in \
        (clone.parent / "stub.log").read_text()


def test_after_the_workflow_status_is_clean_and_a_second_make_repro_runs_nothing(clone):
    _assert_clean_and_idempotent(clone)


def test_make_repro_on_an_image_folder_tracked_with_dvc_add(clone):
    folder = clone / "data/images"
    write_digits_folder(folder, size=28)
    for digit in folder.iterdir():
        if digit.name not in DIGITS_KEPT:
            shutil.rmtree(digit)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["data"].update({"source": "image_folder", "input": "data/images"})
    params["data"]["images"]["image_size"] = [28, 28]
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(clone, str(SUITE_VENV / "bin/dvc"), "add", "-q", "data/images")
    run(clone, "git", "add", "-A")
    run(clone, "git", "commit", "-qm", "digits as an image folder")
    first = make(clone)
    assert "Running stage 'prepare'" in first.stdout
    card = json.loads((clone / "data/prepared/data_card.json").read_text())
    assert card["class_names"] == list(DIGITS_KEPT)
    _assert_clean_and_idempotent(clone)
