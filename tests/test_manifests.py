"""The multi-worker launchers under deploy/, checked offline: the Kubernetes manifest is valid
YAML with the fields Kubernetes requires (and Kubernetes' own schema where it is installed),
its parts agree with each other, the Slurm script parses, and every worker's TF_CONFIG
names the same cluster."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy/kubernetes/train-multiworker.yaml"
SBATCH = ROOT / "deploy/slurm/train-multiworker.sbatch"
TF_CONFIG_SCRIPT = ROOT / "deploy/tf_config.py"
# The oldest Kubernetes with everything the manifest uses (Indexed Jobs, pod hostnames from the
# index), and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")


def _documents() -> dict[str, dict]:
    documents = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc is not None]
    kinds = [doc.get("kind") for doc in documents]
    assert sorted(kinds) == ["Job", "Service"], kinds
    return {doc["kind"]: doc for doc in documents}


def _pod(job: dict) -> dict:
    return job["spec"]["template"]


def _container(job: dict) -> dict:
    (container,) = _pod(job)["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, str]:
    return {entry["name"]: entry.get("value") for entry in container.get("env", [])}


def _tf_config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TF_CONFIG_SCRIPT), *args],
                          capture_output=True, text=True, timeout=60)


def test_every_document_has_what_kubernetes_requires():
    versions = {"Service": "v1", "Job": "batch/v1"}
    for kind, doc in _documents().items():
        assert doc["apiVersion"] == versions[kind]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), kind
    job = _documents()["Job"]
    containers = _pod(job)["spec"]["containers"]
    assert containers and all(c["name"] and c["image"] for c in containers)


def test_service_is_headless_and_selects_the_job_pods():
    documents = _documents()
    service, job = documents["Service"], documents["Job"]
    assert service["spec"]["clusterIP"] == "None"
    # Workers resolve each other while starting, before a readiness check could pass.
    assert service["spec"]["publishNotReadyAddresses"] is True
    selector = service["spec"]["selector"]
    assert selector and selector.items() <= _pod(job)["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    (container_port,) = _container(job)["ports"]
    assert port["targetPort"] == port["port"] == container_port["containerPort"]
    # The pods' DNS names are <job>-<index>.<subdomain>: the subdomain must be the Service.
    assert _pod(job)["spec"]["subdomain"] == service["metadata"]["name"]


def test_job_is_indexed_runs_every_worker_at_once_and_never_restarts_one():
    job = _documents()["Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    workers = int(_env(_container(job))["NUM_WORKERS"])
    assert spec["completions"] == spec["parallelism"] == workers >= 2
    assert _pod(job)["spec"]["restartPolicy"] == "Never"
    # A replacement pod could not rejoin the running all-reduce: one failure ends the Job.
    assert spec["backoffLimit"] == 0
    resources = _container(job)["resources"]
    assert resources["requests"] == resources["limits"]
    assert {"cpu", "memory"} <= resources["limits"].keys()


def test_every_pod_builds_tf_config_from_its_index_and_the_services_names():
    documents = _documents()
    service, job = documents["Service"], documents["Job"]
    script = _container(job)["args"][0]
    (pattern,) = re.findall(r"--host-pattern '([^']+)'", script)
    assert pattern == f"{job['metadata']['name']}-{{index}}.{service['metadata']['name']}"
    assert '--index "$JOB_COMPLETION_INDEX"' in script and '--count "$NUM_WORKERS"' in script
    (port,) = re.findall(r"--port (\d+)", script)
    assert int(port) == service["spec"]["ports"][0]["port"]
    assert 'deploy/run_worker.sh "$VARIANT"' in script
    assert (ROOT / "deploy/run_worker.sh").is_file()


def test_every_pod_runs_the_image_of_one_commit():
    container = _container(_documents()["Job"])
    image, tag = container["image"].rsplit(":", 1)
    assert tag == _env(container)["CNNPIPE_REVISION"] == "COMMIT_SHA"  # sed replaces both
    # The DVC remote's credentials come from a Secret, not from the manifest.
    (source,) = container["envFrom"]
    assert source["secretRef"]["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_matches_kubernetes_schema(version):
    import kubernetes_validate as validator  # the lock pins it: Kubernetes' schemas, offline

    for doc in _documents().values():
        # strict: a misspelt field (completionMod) is an error, not silently ignored.
        validator.validate(doc, version, strict=True)


def test_sbatch_script_parses_and_asks_for_one_task_per_node():
    text = SBATCH.read_text()
    subprocess.run(["bash", "-n", str(SBATCH)], check=True, timeout=60)
    lines = text.splitlines()
    # sbatch reads #SBATCH lines only before the first command.
    first_command = next(i for i, line in enumerate(lines)
                         if i and line.strip() and not line.startswith("#"))
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    assert all(not line.startswith("#SBATCH") for line in lines[first_command:])
    assert int(directives["nodes"]) >= 2 and directives["ntasks-per-node"] == "1"
    assert {"job-name", "cpus-per-task", "mem", "time", "output"} <= directives.keys()
    for needed in ("scontrol show hostnames", "SLURM_PROCID", "srun --kill-on-bad-exit=1",
                   "deploy/tf_config.py", "deploy/run_worker.sh", "CNNPIPE_REVISION"):
        assert needed in text, needed


def test_worker_script_parses_and_only_the_chief_runs_dvc_repro():
    script = ROOT / "deploy/run_worker.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=60)
    text = script.read_text()
    chief = text.split('if [ "$index" != 0 ]; then', 1)[1]
    worker, chief = chief.split("fi\n", 1)
    assert "PYTHONPATH=src python stages/train.py" in worker and "exit 0" in worker
    assert "dvc repro" not in worker
    assert chief.index('dvc repro -s "train@$variant"') < chief.index("dvc push")


def test_two_workers_get_the_same_cluster_and_their_own_index():
    spec = importlib.util.spec_from_file_location("tf_config", TF_CONFIG_SCRIPT)
    tf_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tf_config)
    configs = []
    for index in range(2):
        done = _tf_config("--index", str(index), "--count", "2",
                          "--host-pattern", "cnnpipe-train-{index}.cnnpipe-train")
        assert done.returncode == 0, done.stderr
        configs.append(json.loads(done.stdout))
    assert configs[0]["cluster"] == configs[1]["cluster"] == {
        "worker": ["cnnpipe-train-0.cnnpipe-train:2222", "cnnpipe-train-1.cnnpipe-train:2222"]}
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(2)]
    # Slurm's form: the node list, in rank order.
    assert tf_config.tf_config(1, ["node-a", "node-b"], 23456) == json.loads(
        _tf_config("--index", "1", "--hosts", "node-a,node-b", "--port", "23456").stdout)


@pytest.mark.parametrize("args, message", [
    (["--index", "2", "--hosts", "a,b"], "--index 2 is outside 0..1"),
    (["--index", "0", "--count", "2", "--host-pattern", "worker"], "has no {index}"),
    (["--index", "0", "--host-pattern", "w-{index}"], "needs --count"),
    (["--index", "0", "--hosts", ",", "--port", "2222"], "names no host"),
    (["--index", "0", "--hosts", "a", "--port", "70000"], "is not a TCP port"),
])
def test_bad_arguments_stop_with_one_line(args, message):
    done = _tf_config(*args)
    assert done.returncode == 2 and not done.stdout
    assert message in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr
