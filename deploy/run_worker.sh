#!/usr/bin/env bash
# One worker of a multi-worker train@<variant>, run in a checkout of the commit to train (its
# params.yaml sets the variant's strategy to multi_worker). The Kubernetes Job and the Slurm
# script both end here, with TF_CONFIG already set (deploy/tf_config.py builds it).
#
#   deploy/run_worker.sh VARIANT
#
# Worker 0, the chief, reproduces the stage through DVC, pushes the outputs to the DVC remote
# and the new dvc.lock (with the small outputs git keeps) to a git branch. The others run the
# stage's command itself: DVC would fail on the outputs they do not write.
#
# Environment:
#   TF_CONFIG          this worker's index and every worker's address (required)
#   CNNPIPE_REVISION   the commit the job was started for; a checkout elsewhere refuses to run
#   CNNPIPE_VENV       the environment to run in (default: .venv in the checkout)
#   RESULTS_GIT_URL    chief: where to push the results commit (none: it stays in this checkout)
#   RESULTS_BRANCH     chief: the branch to push it to (default: train/<variant>-<commit>)
#   and the DVC remote's credentials, as its plugin reads them (AWS_ACCESS_KEY_ID, ...).
set -euo pipefail
variant=${1:?usage: deploy/run_worker.sh VARIANT}
: "${TF_CONFIG:?TF_CONFIG is not set: build it with deploy/tf_config.py}"
venv=${CNNPIPE_VENV:-$PWD/.venv}
if [ -d "$venv/bin" ]; then
    export PATH="$venv/bin:$PATH"
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
index=$(python -c 'import json, os; print(json.loads(os.environ["TF_CONFIG"])["task"]["index"])')
head=$(git rev-parse HEAD)

# Every worker must run the same code and settings, or the all-reduce mixes two models.
if [ -n "${CNNPIPE_REVISION:-}" ] && [ "$head" != "$(git rev-parse "$CNNPIPE_REVISION^{commit}")" ]; then
    echo "error: worker $index is at $head, the job was started for $CNNPIPE_REVISION" >&2
    exit 2
fi
# Stages read resolved/, not params.yaml: a commit whose resolved/ is stale would train on old
# settings. `dvc repro params` (or `make repro`) and a commit fix it.
if ! dvc status params | grep -q "up to date"; then
    echo "error: the params stage is out of date at $head: run \`dvc repro params\`, commit dvc.lock and resolved/, resubmit" >&2
    exit 2
fi

# The train stage's data dependencies, from the shared DVC remote (each worker its own copy).
dvc pull data/prepared data/processed/preprocessing.json

if [ "$index" != 0 ]; then
    echo "worker $index: running train@$variant's command"
    PYTHONPATH=src python stages/train.py "$variant"
    exit 0
fi

echo "chief: dvc repro -s train@$variant at $head"
dvc repro -s "train@$variant"
dvc push
git add -A
# Nothing to commit when the stage was already up to date at this commit.
if ! git diff --cached --quiet; then
    git -c user.name=cnnpipe-train -c user.email=cnnpipe-train@localhost \
        commit -q -m "train@$variant by deploy/run_worker.sh at ${head:0:12}"
fi
branch=${RESULTS_BRANCH:-train/$variant-${head:0:12}}
if [ -n "${RESULTS_GIT_URL:-}" ]; then
    git push -q "$RESULTS_GIT_URL" "HEAD:refs/heads/$branch"
    echo "chief: results on branch $branch; merge it, then \`dvc pull\`"
else
    echo "warning: RESULTS_GIT_URL is not set: the results commit stays in this checkout" >&2
    git show --stat HEAD
fi
