"""Run a GitHub Actions job's steps locally, in order, as a given event would run them.

Enough of the runner for this project's workflow: each step's `if:` and `${{ ... }}`
expressions are evaluated (contexts github, secrets, steps, env; functions always, success,
failure, cancelled), `run:` steps run under bash with GITHUB_OUTPUT and GITHUB_STEP_SUMMARY
files, and step outputs feed later `if:`s. `uses:` steps cannot run offline: they are skipped,
and a tool such a step would install can be stood in for by a stub on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(==|!=|&&|\|\||!|\(|\))|([A-Za-z_][\w.-]*(?:\(\))?))")


@dataclass
class StepResult:
    name: str
    status: str  # "ran", "skipped: <why>", "not run: if is false"
    returncode: int | None = None
    output: str = ""


@dataclass
class JobRun:
    results: list[StepResult] = field(default_factory=list)

    def ran(self) -> list[StepResult]:
        return [r for r in self.results if r.status == "ran"]

    def skipped(self) -> list[StepResult]:
        return [r for r in self.results if r.status != "ran"]


def load_job(workflow_file: Path) -> dict:
    """The workflow's only job (this project has one)."""
    workflow = yaml.safe_load(workflow_file.read_text())
    (job,) = workflow["jobs"].values()
    return job


def step_name(step: dict) -> str:
    return step.get("name") or step.get("uses") or step["run"].strip().splitlines()[0]


def _lookup(context: dict, dotted: str):
    value = context
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part, "")
    return value


def evaluate(expression: str, context: dict, failed: bool) -> object:
    """A GitHub expression's value: its operators become Python's, its names context look-ups."""
    functions = {"always()": "True", "success()": str(not failed), "failure()": str(failed),
                 "cancelled()": "False"}
    python, position = [], 0
    expression = expression.strip()
    while position < len(expression):
        match = TOKEN.match(expression, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot read expression {expression!r} at {position}")
        position = match.end()
        literal, operator, name = match.groups()
        if literal is not None:
            python.append(repr(literal[1:-1].replace("''", "'")))
        elif operator is not None:
            python.append({"&&": " and ", "||": " or ", "!": " not "}.get(operator, operator))
        elif name in functions:
            python.append(functions[name])
        elif name in ("true", "false"):
            python.append(str(name == "true"))
        else:
            python.append(repr(_lookup(context, name)))
    return eval("".join(python), {"__builtins__": {}}, {})  # noqa: S307 - built from tokens above


def substitute(text: str, context: dict, failed: bool) -> str:
    return EXPRESSION.sub(lambda m: str(evaluate(m.group(1), context, failed)), str(text))


def should_run(step: dict, context: dict, failed: bool) -> bool:
    condition = step.get("if")
    if condition is None:
        return not failed
    condition = str(condition).strip()
    inner = EXPRESSION.fullmatch(condition)
    return bool(evaluate(inner.group(1) if inner else condition, context, failed))


def _read_outputs(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def run_job(job: dict, workdir: Path, context: dict, base_env: dict[str, str],
            skip_run, timeout: int) -> JobRun:
    """Run ``job``'s steps in ``workdir``; ``skip_run(script)`` names a reason to skip a run step."""
    run = JobRun()
    failed = False
    scratch = workdir.parent / "github"
    scratch.mkdir(exist_ok=True)
    summary = scratch / "step_summary.md"
    context.setdefault("steps", {})
    job_env = {key: substitute(value, context, failed) for key, value in job.get("env", {}).items()}
    for number, step in enumerate(job["steps"]):
        name = step_name(step)
        if "uses" in step:
            run.results.append(StepResult(name, f"skipped: `uses: {step['uses']}` needs GitHub"))
            continue
        reason = skip_run(step["run"])
        if reason:
            run.results.append(StepResult(name, f"skipped: {reason}"))
            continue
        if not should_run(step, context, failed):
            run.results.append(StepResult(name, f"not run: `if: {step.get('if')}` is false"))
            continue
        outputs = scratch / f"output_{number}"
        env = {**base_env, **job_env,
               **{key: substitute(value, context, failed) for key, value in step.get("env", {}).items()},
               "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary)}
        script = substitute(step["run"], context, failed)
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        run.results.append(StepResult(name, "ran", done.returncode, done.stdout + done.stderr))
        if "id" in step:
            context["steps"][step["id"]] = {"outputs": _read_outputs(outputs),
                                            "outcome": "success" if done.returncode == 0 else "failure"}
        if done.returncode != 0 and not step.get("continue-on-error"):
            failed = True
    return run
