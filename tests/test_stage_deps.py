"""`dvc status` tells the truth: every stage's deps cover the code it runs, and a change to
that code, or to a default, marks exactly the stages it affects."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _module_file(src: Path, module: str) -> Path | None:
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, src: Path) -> set[str]:
    """cnnpipe modules a file imports anywhere (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from cnnpipe.core import layout` imports the submodule cnnpipe.core.layout.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        if name.split(".")[0] != "cnnpipe":
            continue
        parts = name.split(".")
        # Every package on the way is executed too: cnnpipe/__init__.py, cnnpipe/core/...
        for end in range(1, len(parts) + 1):
            if _module_file(src, ".".join(parts[:end])):
                found.add(".".join(parts[:end]))
    return found


def import_closure(script: Path, src: Path) -> set[Path]:
    """The files Python runs for ``script``: the script and every cnnpipe module reachable."""
    files = {script}
    pending = list(_imported_modules(script, src))
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(src, module)
        files.add(path)
        pending.extend(_imported_modules(path, src))
    return files


def stage_scripts(root: Path) -> dict[str, tuple[Path, list[str]]]:
    """Stage name -> (the script its cmd runs, its deps), from dvc.yaml as written."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        script = next(word for word in body["cmd"].split() if word.endswith(".py"))
        found[name] = (root / script, [str(dep) for dep in body.get("deps", [])])
    return found


def uncovered(root: Path) -> dict[str, list[str]]:
    """Per stage, the files its command runs that none of its deps names."""
    missing = {}
    for name, (script, deps) in stage_scripts(root).items():
        dep_paths = [(root / dep).resolve() for dep in deps if "${" not in dep]
        for path in sorted(import_closure(script, root / "src")):
            path = path.resolve()
            if not any(path == dep or dep in path.parents for dep in dep_paths):
                missing.setdefault(name, []).append(str(path.relative_to(root)))
    return missing


def test_every_stage_lists_the_code_it_runs():
    assert uncovered(ROOT) == {}


def test_stages_run_the_code_of_their_own_checkout():
    """`dvc exp run --temp` and queued runs work in a copy of the repository: the copy's
    src/ must be imported, not the one the virtual environment was installed from."""
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        assert stage.get("do", stage)["cmd"].startswith("PYTHONPATH=src python "), name


def test_the_closure_reaches_function_level_imports():
    closure = {
        str(path.relative_to(ROOT)) for path in import_closure(ROOT / "stages/train.py", SRC)
    }
    # stages/train.py imports these inside main(), after the cheap checks.
    assert "src/cnnpipe/models/skeleton.py" in closure
    assert "src/cnnpipe/models/zoo/simple_cnn.py" in closure  # the registry loads the zoo
    assert "src/cnnpipe/train/curves.py" in closure
    assert "src/cnnpipe/core/figures.py" in closure  # reached through curves.py
    assert "src/cnnpipe/__init__.py" in closure


def test_an_import_of_an_unlisted_module_is_caught(tmp_path):
    for name in ("dvc.yaml", "stages", "src"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("*.pyc"))
        else:
            shutil.copy2(source, tmp_path / name)
    assert uncovered(tmp_path) == {}
    leaderboard = tmp_path / "src/cnnpipe/compare/leaderboard.py"
    leaderboard.write_text(
        leaderboard.read_text() + "\n\ndef _later():\n    from cnnpipe.report import find_dvc\n"
    )
    found = uncovered(tmp_path)
    assert list(found) == ["compare"] and "src/cnnpipe/report/__init__.py" in found["compare"]


def test_only_the_params_stage_reads_the_schema_code():
    for name, (script, _) in stage_scripts(ROOT).items():
        closure = import_closure(script, SRC)
        reads_schema = any("cnnpipe/params" in str(path) for path in closure)
        assert reads_schema == (name == "params"), name


# --- what `dvc status` says after an edit, in a tiny repo on which `dvc repro` ran --------

@pytest.fixture
def tiny_repo(tmp_path_factory):
    from pipeline_repo import ONE_TINY_VARIANT, committed_tiny_repo

    return committed_tiny_repo(tmp_path_factory, ONE_TINY_VARIANT, "deps_repo")


def _changed_stages(repo: Path) -> set[str]:
    import json

    from pipeline_repo import dvc

    return set(json.loads(dvc(repo, "status", "--json").stdout))


def _edit(repo: Path, relative: str, old: str, new: str) -> None:
    path = repo / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} in {relative}"
    path.write_text(text.replace(old, new))


@pytest.mark.slow
def test_editing_a_default_reruns_the_stages_it_changes(tiny_repo):
    from pipeline_repo import dvc

    # The tiny variant sets filters and dense_units but not kernel_size: the schema decides it.
    # The registration holds the schema beside the trunk, so train's code changed too.
    _edit(tiny_repo, "src/cnnpipe/models/zoo/simple_cnn.py",
          'kernel_size: PositiveInt = Field(3,', 'kernel_size: PositiveInt = Field(2,')
    assert _changed_stages(tiny_repo) == {"params", "train@simple_cnn"}
    out = dvc(tiny_repo, "repro").stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"params", "train@simple_cnn", "evaluate@simple_cnn", "compare"}
    card = (tiny_repo / "models/simple_cnn/model_card.json").read_text()
    assert '"kernel_size": 2' in card  # the resolved value travels with the model


@pytest.mark.slow
def test_a_default_that_params_yaml_overrides_changes_nothing_downstream(tiny_repo):
    from pipeline_repo import dvc

    _edit(tiny_repo, "src/cnnpipe/params/schema.py",
          "    batch_size: PositiveInt = 128\n", "    batch_size: PositiveInt = 256\n")
    assert _changed_stages(tiny_repo) == {"params"}
    out = dvc(tiny_repo, "repro").stdout
    assert "Running stage 'params'" in out
    assert "Running stage 'train" not in out  # the tiny params set batch_size themselves


@pytest.mark.slow
def test_editing_train_plotting_code_marks_only_train(tiny_repo):
    _edit(tiny_repo, "src/cnnpipe/train/curves.py",
          '{"epoch": epoch, "train": train, "validation": val}',
          '{"epoch": epoch, "train": train, "val": val}')
    assert _changed_stages(tiny_repo) == {"train@simple_cnn"}


@pytest.mark.slow
def test_editing_the_fitted_preprocessing_reaches_train_through_its_settings_file(tiny_repo):
    from pipeline_repo import dvc

    _edit(tiny_repo, "src/cnnpipe/preprocess/preprocessing.py",
          "PIXEL_SCALE = 255", "PIXEL_SCALE = 256")
    assert _changed_stages(tiny_repo) == {"preprocess"}
    dvc(tiny_repo, "repro", "-s", "preprocess")
    # preprocessing.json changed, and the model's input layers are built from it.
    assert _changed_stages(tiny_repo) == {"train@simple_cnn"}


@pytest.mark.slow
def test_editing_the_models_normalization_layers_marks_only_train(tiny_repo):
    # Evaluate loads the saved model, so only a retrained model can change what it computes.
    _edit(tiny_repo, "src/cnnpipe/models/inputs.py",
          "layers.Rescaling(1.0 / 255.0,", "layers.Rescaling(1.0 / 256.0,")
    assert _changed_stages(tiny_repo) == {"train@simple_cnn"}


@pytest.mark.slow
def test_editing_shared_core_code_marks_every_stage(tiny_repo):
    _edit(tiny_repo, "src/cnnpipe/core/io.py", "indent=2", "indent=1")
    assert _changed_stages(tiny_repo) == {
        "params", "prepare", "preprocess", "train@simple_cnn", "evaluate@simple_cnn", "compare",
    }



# --- a refused params.yaml costs seconds and deletes nothing ------------------------------

BAD_PARAMS = [
    ("models.simple_cnn.dense_units", "-1", "models.simple_cnn.dense_units"),
    ("models.simple_cnn.conv_dropout", "1.5", "models.simple_cnn.conv_dropout"),
    ("models.simple_cnn.augmentation", "{rotation: 5}", "models.simple_cnn.augmentation.rotation"),
    ("train.epochs", "0", "train.epochs"),
    ("train.learning_rate", "'1e-4'", "train.learning_rate"),
    ("foo", "1", "unknown key `foo`"),
    # Sizes that used to end in a ResourceExhaustedError traceback or an OOM kill (-9):
    ("preprocess.image_size", "10000", "preprocess.image_size"),
    ("data.images.image_size", "[10000, 10000]", "data.images.image_size"),
    ("models.simple_cnn.batch_size", "1000000000", "models.simple_cnn: training needs"),
]


@pytest.fixture(scope="module")
def reproduced_repo(tmp_path_factory):
    from pipeline_repo import ONE_TINY_VARIANT, committed_tiny_repo

    return committed_tiny_repo(tmp_path_factory, ONE_TINY_VARIANT, "bad_params_repo")


def _set_in_yaml(text: str, key: str, value: str) -> str:
    """params.yaml with ``key`` set to the YAML ``value``, written as a person would."""
    data = yaml.safe_load(text)
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[leaf] = "@@VALUE@@"
    return yaml.safe_dump(data, sort_keys=False).replace("'@@VALUE@@'", value)


def _output_digests(repo: Path) -> dict[str, str]:
    import hashlib

    outputs = [p for p in ("models", "metrics", "plots", "resolved", "data", "reports")]
    return {
        str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
        for name in outputs for path in sorted((repo / name).rglob("*")) if path.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("key, value, named", BAD_PARAMS)
def test_dvc_repro_refuses_a_bad_value_fast_and_keeps_every_output(
    reproduced_repo, key, value, named
):
    from pipeline_repo import dvc

    params_file = reproduced_repo / "params.yaml"
    good = params_file.read_text()
    before = _output_digests(reproduced_repo)
    params_file.write_text(_set_in_yaml(good, key, value))
    try:
        result = dvc(reproduced_repo, "repro", check=False)
    finally:
        params_file.write_text(good)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and named in errors[0], result.stderr
    # Refused by the first stage, before any stage that imports TensorFlow could start.
    assert "Running stage 'params'" in result.stdout
    assert "Running stage 'prepare'" not in result.stdout
    assert _output_digests(reproduced_repo) == before
    assert _changed_stages(reproduced_repo) == set()


@pytest.mark.slow
def test_a_hand_written_exponent_is_a_number_as_dvc_reads_it(reproduced_repo):
    from pipeline_repo import dvc

    params_file = reproduced_repo / "params.yaml"
    good = params_file.read_text()
    params_file.write_text(_set_in_yaml(good, "train.learning_rate", "1e-4"))
    try:
        assert _changed_stages(reproduced_repo) == {"params"}
        out = dvc(reproduced_repo, "repro", "-s", "params").stdout
        assert "params valid" in out
        resolved = (reproduced_repo / "resolved/train/simple_cnn.json").read_text()
        assert '"learning_rate": 0.0001' in resolved
    finally:
        params_file.write_text(good)
        dvc(reproduced_repo, "repro", "-s", "params")


# --- prepare depends on the active source's local input, and on nothing unused -----------


def _tar_of_pngs(path: Path, seed: int) -> Path:
    """A real .tar.gz of two classes of small random PNGs; ``seed`` changes every pixel."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        for name in ("cat", "dog"):
            for i in range(12):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), np.uint8)).save(buffer, "PNG")
                info = tarfile.TarInfo(f"pets/{name}/{i}.png")
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
    return path


@pytest.mark.slow
def test_an_archive_replaced_in_place_marks_prepare_changed(tmp_path):
    import json

    from pipeline_repo import ONE_TINY_VARIANT, dvc, make_tiny_repo, run

    repo = make_tiny_repo(tmp_path / "repo", ONE_TINY_VARIANT)
    archive = _tar_of_pngs(tmp_path / "pets.tar.gz", seed=0)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update({"source": "archive", "input": str(archive), "min_images_per_class": 1})
    params["data"]["archive"]["path_or_url"] = str(archive)
    params["data"]["images"]["image_size"] = [18, 18]  # the smallest the tiny variant fits
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "commit", "-qam", "a local archive")
    dvc(repo, "repro", "prepare")
    assert "prepare" not in _changed_stages(repo)
    first = (repo / "data/prepared/data_card.json").read_text()

    _tar_of_pngs(archive, seed=1)  # same path, other images; no sha256 set
    status = json.loads(dvc(repo, "status", "--json").stdout)
    assert {"changed deps": {str(archive): "modified"}} in status["prepare"]
    assert "Running stage 'prepare'" in dvc(repo, "repro", "prepare").stdout
    assert (repo / "data/prepared/data_card.json").read_text() != first  # the new images
    assert not (repo / "data/images").exists()  # the unused source was never needed
