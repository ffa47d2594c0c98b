"""The GitHub Actions workflow runs what the README promises, on a full clone."""

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / ".github/workflows/ci.yml"


def _steps() -> list[dict]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    assert workflow.get("on", workflow.get(True)), "no trigger"
    (job,) = workflow["jobs"].values()
    return job["steps"]


def test_workflow_checks_out_full_history_and_python_311():
    steps = _steps()
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # DVC experiments fail on shallow clones
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(python["with"]["python-version"]) == "3.11"


def test_workflow_tests_reproduces_reports_and_uploads_in_that_order():
    steps = _steps()
    commands = [s.get("run", "") for s in steps]

    def index(predicate) -> int:
        return next(i for i, command in enumerate(commands) if predicate(command))

    test = index(lambda c: c.strip() == "make test")
    repro = index(lambda c: c.strip() == "make repro")
    report = index(lambda c: ("cnnpipe.report" in c or "cnnpipe report" in c) and "--base" in c)
    assert test < repro < report
    assert "--out report.md" in commands[report]
    upload = next(i for i, s in enumerate(steps)
                  if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload > report
    paths = steps[upload]["with"]["path"].split()
    assert "report.md" in paths and any(p.rstrip("/") == "report_assets" for p in paths)


def test_makefile_has_the_targets_the_workflow_calls():
    makefile = (WORKFLOW.parents[2] / "Makefile").read_text()
    for target in ("test", "repro"):
        assert f"\n{target}:" in makefile, target
