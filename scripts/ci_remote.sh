#!/usr/bin/env bash
# CI's use of a DVC remote: `pull` fetches the outputs dvc.lock records, so `dvc repro` runs
# only the stages whose inputs changed; `push` stores a main-branch run's outputs for the
# next pull request. Without a configured remote (or without credentials, as on a fork's
# pull request) it says so and exits 0: the pipeline then runs from scratch.
set -euo pipefail
action=${1:?usage: ci_remote.sh pull|push}
dvc=${DVC:-.venv/bin/dvc}
python=${PYTHON:-.venv/bin/python}

# The default remote's URL from the config, not from `dvc remote list`, whose table wraps long
# URLs at $COLUMNS (pytest-xdist workers set it to 80).
name=$("$dvc" remote default 2>/dev/null || true)
url=
if [ -n "$name" ]; then
    url=$("$dvc" config "remote.$name.url" 2>/dev/null || true)
fi
if [ -z "$url" ]; then
    echo "no DVC remote configured: every stage runs (docs/experiments.md: \"CI on pull requests\")"
    echo "configured=false" >> "${GITHUB_OUTPUT:-/dev/null}"
    exit 0
fi
echo "configured=true" >> "${GITHUB_OUTPUT:-/dev/null}"

# The remote's plugin is an optional extra of the package (pyproject.toml).
case "$url" in
    s3://*) extra=s3 ;;
    gs://*) extra=gs ;;
    ssh://*) extra=ssh ;;
    *) extra= ;;
esac
if [ -n "$extra" ]; then
    "$python" -m pip install -q -e ".[$extra]"
fi
if [ -n "${GCP_CREDENTIALS_JSON:-}" ]; then
    # GCS reads a key file, not a variable; the file stays outside the checkout.
    key=$(mktemp)
    printf '%s' "$GCP_CREDENTIALS_JSON" > "$key"
    export GOOGLE_APPLICATION_CREDENTIALS=$key
fi

case "$action" in
    # --allow-missing: a stage whose outputs were never pushed is simply reproduced.
    pull) "$dvc" pull --allow-missing || echo "::warning::dvc pull failed (no credentials?); reproducing every stage" ;;
    push) "$dvc" push ;;
    *) echo "usage: ci_remote.sh pull|push" >&2; exit 2 ;;
esac
