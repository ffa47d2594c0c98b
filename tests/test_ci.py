"""The GitHub Actions workflow: valid offline (GitHub's schema and actionlint), runs what the
README promises, and its DVC-remote script works against a real local remote."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github/workflows/ci.yml"
VENV_BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    """A checker installed beside this Python (requirements.txt), else on PATH."""
    found = VENV_BIN / name if (VENV_BIN / name).is_file() else shutil.which(name)
    assert found, f"{name} is not installed: run `make setup` (requirements.txt lists it)"
    return str(found)


def _workflow() -> dict:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    workflow["on"] = workflow.get("on", workflow.pop(True, None))
    return workflow


def _steps() -> list[dict]:
    (job,) = _workflow()["jobs"].values()
    return job["steps"]


def _step(name: str) -> dict:
    return next(s for s in _steps() if s.get("name", "").startswith(name))


def test_workflow_matches_githubs_schema():
    done = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflow_passes_actionlint():
    done = subprocess.run([_tool("actionlint"), str(WORKFLOW)], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflow_checks_out_full_history_and_caches_pip():
    checkout = next(s for s in _steps() if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # DVC experiments fail on shallow clones
    python = next(s for s in _steps() if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"
    assert python["with"]["cache"] == "pip"
    assert "requirements.txt" in python["with"]["cache-dependency-path"]


def test_documentation_only_changes_skip_the_pipeline():
    triggers = _workflow()["on"]
    for event in ("push", "pull_request"):
        assert "**.md" in triggers[event]["paths-ignore"], event


def test_workflow_pulls_reproduces_pushes_and_reports_in_that_order():
    steps = _steps()
    commands = [s.get("run", "") for s in steps]

    def index(predicate) -> int:
        return next(i for i, command in enumerate(commands) if predicate(command))

    quick = index(lambda c: c.strip() == "make quick-test")
    slow = index(lambda c: c.strip() == "make slow-test")
    pull = index(lambda c: "ci_remote.sh pull" in c)
    repro = index(lambda c: c.strip().startswith("make repro"))
    push = index(lambda c: "ci_remote.sh push" in c)
    report = index(lambda c: "ci_report.sh" in c)
    comment = index(lambda c: "cml comment update" in c)
    assert quick < slow < pull < repro < push < report < comment
    # Together the two tiers are `make test`, the README's one test command.
    makefile = (ROOT / "Makefile").read_text()
    assert "\ntest: quick-test slow-test\n" in makefile
    # Only main's runs fill the remote; pull requests read it.
    assert "github.event_name == 'push'" in steps[push]["if"]
    assert steps[report]["env"]["BASE"] == "origin/${{ github.base_ref }}"


def test_comment_is_sticky_and_a_read_only_token_does_not_fail_the_job():
    assert _workflow()["permissions"]["pull-requests"] == "write"
    comment = _step("Comment on the pull request")
    assert "cml comment update" in comment["run"] and "--publish" in comment["run"]
    assert comment["continue-on-error"] is True
    assert comment["env"]["REPO_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    # The fallback a fork still gets: the report in the job summary, written by the report step.
    assert "GITHUB_STEP_SUMMARY" in (ROOT / "scripts/ci_report.sh").read_text()


def test_makefile_has_the_targets_the_workflow_calls():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "repro"):
        assert f"\n{target}:" in makefile, target


# --- scripts/ci_remote.sh against a real repository --------------------------------------


def _git_dvc_repo(path: Path) -> Path:
    path.mkdir()
    for args in (["git", "init", "-q"], [str(VENV_BIN / "dvc"), "init", "-q"]):
        subprocess.run(args, cwd=path, check=True, capture_output=True)
    return path


def _remote_script(repo: Path, action: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, str]:
    outputs = tmp_path / f"github_output_{action}"
    env = {**os.environ, "DVC": str(VENV_BIN / "dvc"), "PYTHON": sys.executable,
           "GITHUB_OUTPUT": str(outputs)}
    done = subprocess.run(["bash", str(ROOT / "scripts/ci_remote.sh"), action], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=900)
    return done, outputs.read_text() if outputs.exists() else ""


def test_remote_script_without_a_remote_says_so_and_succeeds(tmp_path):
    repo = _git_dvc_repo(tmp_path / "repo")
    done, outputs = _remote_script(repo, "pull", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no DVC remote configured" in done.stdout
    assert outputs.strip() == "configured=false"


def test_remote_script_pushes_and_a_fresh_clone_pulls(tmp_path):
    dvc = str(VENV_BIN / "dvc")
    repo = _git_dvc_repo(tmp_path / "repo")
    storage = tmp_path / "storage"
    (repo / "weights.bin").write_bytes(b"trained weights")
    for args in ([dvc, "add", "-q", "weights.bin"],
                 [dvc, "remote", "add", "-d", "storage", str(storage)]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True)
    done, outputs = _remote_script(repo, "push", tmp_path)
    assert done.returncode == 0, done.stderr
    assert outputs.strip() == "configured=true", done.stdout + done.stderr
    assert any(path.is_file() for path in storage.rglob("*"))
    # A CI runner: the same commit without the cache or the file.
    shutil.rmtree(repo / ".dvc/cache")
    (repo / "weights.bin").unlink()
    done, _ = _remote_script(repo, "pull", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (repo / "weights.bin").read_bytes() == b"trained weights"
