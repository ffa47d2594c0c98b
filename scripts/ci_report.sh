#!/usr/bin/env bash
# CI's report step: `cnnpipe report` against the base branch, written to OUT (the body of
# the pull-request comment) and to the job summary, which a fork's read-only token can
# still write. Images live in OUT's assets folder; the comment step uploads them.
set -euo pipefail
base=${1:?usage: ci_report.sh BASE_REV [OUT]}
out=${2:-report.md}
python=${PYTHON:-.venv/bin/python}

# The checkout's own code, as the stage commands use it.
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "$python" -m cnnpipe.report --base "$base" --out "$out"

if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    {
        cat "$out"
        echo
        echo "_Images: the \`pipeline-report\` artifact of this run, or the pull-request comment._"
    } >> "$GITHUB_STEP_SUMMARY"
fi
